"""The sweep file as typed, frozen values: `SweepSpec` (the file), `RunSpec` (one entry of
`runs:`), `RayOptions` (the `ray:` section); `expand` turns a spec into concrete `Run`s.

Every key is declared here with its default; an unknown key is a ValueError naming it.
Backends read only these values, never the raw mapping.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import runpy
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from mro.config import load_config
from mro.files import load_yaml
from mro.evaluation.settings import option_names
from mro.messages import quoted

MRO_COMMANDS = ("train", "reject-sample", "rl", "eval")
COMMANDS = MRO_COMMANDS + ("script",)
BACKENDS = ("local", "ray")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# `mro eval` options the sweep sets itself
_EVAL_OWN = ("out",)


def check_name(what: str, name: Any) -> str:
  """A sweep or run name is one plain path component: no '/', no '..', not absolute."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"{what} must be a non-empty string, got {quoted(name)}")
  if name in (".", "..") or "/" in name or "\\" in name or PurePath(name).is_absolute() \
      or ".." in name or name.startswith("~"):
    raise ValueError(f"{what} {quoted(name)} must be one plain directory name (no '/', '..' "
                     "or absolute path): it names a directory under the sweep root")
  return name


def _strings(what: str, value: Any) -> tuple[str, ...]:
  if isinstance(value, str) or not isinstance(value, (list, tuple)):
    raise ValueError(f"{what} must be a list, got {quoted(value)}")
  return tuple(str(v) for v in value)


def _mapping(what: str, value: Any) -> dict:
  if not isinstance(value, Mapping):
    raise ValueError(f"{what} must be a mapping, got {quoted(value)}")
  return dict(value)


def _positive_int(what: str, value: Any, minimum: int = 1) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{what} must be an integer >= {minimum}, got {quoted(value)}")


def _resources(what: str, value: Any) -> dict[str, float]:
  res = _mapping(what, value)
  for key, amount in res.items():
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
      raise ValueError(f"{what}.{key} must be a number >= 0, got {quoted(amount)}")
  return res


def _build(cls, raw: Any, where: str):
  """cls(**raw) with unknown keys refused by name."""
  raw = _mapping(where, raw)
  known = [f.name for f in dataclasses.fields(cls)]
  unknown = sorted(set(raw) - set(known), key=str)
  if unknown:
    raise ValueError(f"unknown key(s) {quoted(unknown)} in {where}; known: {known}")
  return cls(**raw)


@dataclasses.dataclass(frozen=True)
class RayOptions:
  """The `ray:` section: where the cluster is and what each run asks of it."""

  address: str | None = None  # None: RAY_ADDRESS, a running local cluster or a new one;
  # "auto": the cluster started on this machine by `ray start`; "ray://host:10001" (client)
  resources: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"CPU": 1})
  max_retries: int = 3  # a run whose process or node dies is restarted (and resumes)
  placement: str = "STRICT_SPREAD"  # hosts > 1: a Ray placement-group strategy
  heartbeat_s: int = 100  # hosts > 1: jax.distributed heartbeat timeout

  def __post_init__(self):
    if self.address is not None and not isinstance(self.address, str):
      raise ValueError(f"ray.address must be a string, got {quoted(self.address)}")
    object.__setattr__(self, "resources", _resources("ray.resources", self.resources))
    _positive_int("ray.max_retries", self.max_retries, 0)
    _positive_int("ray.heartbeat_s", self.heartbeat_s)
    if self.placement not in PLACEMENTS:
      raise ValueError(f"ray.placement must be one of {PLACEMENTS}, got {quoted(self.placement)}")


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One entry of `runs:`; what it leaves out comes from the sweep."""

  name: str
  command: str | None = None
  config: str | None = None
  set: tuple[str, ...] = ()
  model: str | None = None  # command eval: the model evaluated (default: eval.model)
  script: str | None = None  # command script: a Python file run as the run's program
  args: tuple[str, ...] = ()  # command script: its arguments (after --workdir DIR)
  hosts: int | None = None  # default: the sweep's hosts
  resources: Mapping[str, float] | None = None  # default: ray.resources

  def __post_init__(self):
    where = f"run {self.name!r}"
    check_name("run name", self.name)
    if self.command is not None and self.command not in COMMANDS:
      raise ValueError(f"{where}: command must be one of {COMMANDS}, got {quoted(self.command)}")
    object.__setattr__(self, "set", _strings(f"{where}: set", self.set))
    object.__setattr__(self, "args", _strings(f"{where}: args", self.args))
    if self.hosts is not None:
      _positive_int(f"{where}: hosts", self.hosts)
    if self.resources is not None:
      object.__setattr__(self, "resources", _resources(f"{where}: resources", self.resources))


@dataclasses.dataclass(frozen=True)
class SweepSpec:
  """A sweep file. The grid's cartesian product and the named `runs` are its runs."""

  name: str
  command: str
  config: str | None = None
  set: tuple[str, ...] = ()  # overrides shared by every run of an mro training command
  grid: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  runs: tuple[RunSpec, ...] = ()
  eval: Mapping[str, Any] | None = None  # `mro eval` options after training (and model)
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)
  root: str = "runs/sweeps"  # workdirs: <root>/<name>/<run>
  concurrency: int = 1  # local backend: runs at a time
  hosts: int = 1  # processes per run, joined by jax.distributed (Ray: one per bundle)
  backend: str = "local"
  ray: RayOptions = dataclasses.field(default_factory=RayOptions)
  script: str | None = None
  args: tuple[str, ...] = ()

  def __post_init__(self):
    check_name("sweep name", self.name)
    if self.command not in COMMANDS:
      raise ValueError(f"sweep command must be one of {COMMANDS}, got {quoted(self.command)}")
    if self.backend not in BACKENDS:
      raise ValueError(f"sweep backend must be one of {BACKENDS}, got {quoted(self.backend)}")
    _positive_int("sweep concurrency", self.concurrency)
    _positive_int("sweep hosts", self.hosts)
    if not isinstance(self.root, str) or not self.root:
      raise ValueError(f"sweep root must be a path, got {quoted(self.root)}")
    if self.backend == "ray" and not Path(self.root).expanduser().is_absolute():
      raise ValueError(f"the ray backend needs root: an absolute path on storage every node "
                       f"sees (a shared file system), got {quoted(self.root)}")
    object.__setattr__(self, "set", _strings("sweep set", self.set))
    object.__setattr__(self, "args", _strings("sweep args", self.args))
    object.__setattr__(self, "env", {str(k): str(v) for k, v in
                                     _mapping("sweep env", self.env).items()})
    object.__setattr__(self, "grid", _grid(self.grid))
    if isinstance(self.ray, Mapping):
      if "hosts" in self.ray:
        raise ValueError("ray.hosts is now the sweep's own key hosts: (it applies to the "
                         "local backend too); move it out of ray:")
      object.__setattr__(self, "ray", _build(RayOptions, self.ray, "ray"))
    runs = self.runs if isinstance(self.runs, (list, tuple)) else _strings("runs", self.runs)
    object.__setattr__(self, "runs", tuple(
        r if isinstance(r, RunSpec) else _build(RunSpec, r, f"runs[{i}]")
        for i, r in enumerate(runs)))
    if self.eval is not None:
      object.__setattr__(self, "eval", _eval_options(self.eval))
    if self.grid and self.command not in MRO_COMMANDS[:3]:
      raise ValueError(f"a grid sets config fields: it needs command train, reject-sample or "
                       f"rl, not {quoted(self.command)}")

  @property
  def sweep_dir(self) -> Path:
    return Path(self.root).expanduser() / self.name

  @classmethod
  def from_mapping(cls, raw: Any, where: str = "sweep") -> SweepSpec:
    raw = _mapping(where, raw)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(known), key=str)
    if unknown:
      raise ValueError(f"unknown sweep key(s) {quoted(unknown)}; known: {known}")
    for key in ("name", "command"):
      if key not in raw:
        raise ValueError(f"{where} needs a {quoted(key)}")
    return cls(**raw)


def _grid(grid: Any) -> dict[str, tuple]:
  grid = _mapping("sweep grid", grid or {})
  for key, values in grid.items():
    if "." not in key or not isinstance(values, (list, tuple)) or not values:
      raise ValueError(f"grid entry {quoted(key)} must be section.key: [values...]")
  return {k: tuple(v) for k, v in grid.items()}


def _eval_options(ev: Any) -> dict[str, Any]:
  ev = _mapping("sweep eval", ev)
  known = sorted(option_names() - set(_EVAL_OWN))
  unknown = sorted(set(ev) - set(known), key=str)
  if unknown:
    raise ValueError(f"unknown key(s) {quoted(unknown)} in eval (options of `mro eval`); "
                     "known: "
                     f"{known}")
  return ev


def load_sweep(path: str | Path) -> SweepSpec:
  """A sweep file (.yaml, or .py defining SWEEP = {...}) as a SweepSpec."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"sweep file {path} does not exist")
  if path.suffix == ".py":
    raw = runpy.run_path(str(path)).get("SWEEP")
  elif path.suffix in (".yaml", ".yml"):
    raw = load_yaml(path.read_text(), str(path))
  else:
    raise ValueError(f"sweep file {path} must be .yaml or .py")
  if not isinstance(raw, Mapping):
    raise ValueError(f"{path} must define a mapping (YAML) or SWEEP = {{...}} (Python)")
  return SweepSpec.from_mapping(raw, f"sweep {path}")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep, resolved: its program, workdir and what it asks of a cluster."""

  name: str
  command: str
  config: str | None
  sets: tuple[str, ...]
  eval: Mapping[str, Any] | None
  workdir: Path
  model: str | None = None  # what an eval-only run evaluates
  script: str | None = None
  args: tuple[str, ...] = ()
  hosts: int = 1
  resources: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"CPU": 1})


def _slug(sets: list[str]) -> str:
  parts = [re.sub(r"[^A-Za-z0-9.=_-]+", "-", s.split(".", 1)[-1]).replace("=", "-")
           for s in sets]
  return "_".join(parts) or "base"


def _yaml_scalar(v) -> str:
  return "null" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))


def expand(spec: SweepSpec) -> list[Run]:
  """Every run of the sweep: the grid's cartesian product plus the named variants."""
  base = RunSpec(name="base")
  variants: list[tuple[RunSpec, tuple[str, ...]]] = []
  keys = list(spec.grid)
  for combo in itertools.product(*(spec.grid[k] for k in keys)) if keys else ():
    sets = [f"{k}={_yaml_scalar(v)}" for k, v in zip(keys, combo)]
    variants.append((dataclasses.replace(base, name=check_name("run name", _slug(sets))),
                     tuple(sets)))
  if not keys and not spec.runs:
    variants.append((base, ()))
  variants += [(entry, entry.set) for entry in spec.runs]
  names = [v.name for v, _ in variants]
  if len(set(names)) != len(names):
    raise ValueError(f"run names repeat in sweep {quoted(spec.name)}: {names}")
  return [_resolve(spec, entry, sets) for entry, sets in variants]


def _resolve(spec: SweepSpec, entry: RunSpec, sets: tuple[str, ...]) -> Run:
  where = f"run {entry.name!r}"
  command = entry.command or spec.command
  config = entry.config or spec.config
  script = entry.script or spec.script
  hosts = entry.hosts or spec.hosts
  resources = entry.resources if entry.resources is not None else spec.ray.resources
  model = entry.model or (spec.eval or {}).get("model")
  if command in ("train", "reject-sample", "rl") and not config:
    raise ValueError(f"{where} needs a config for command {quoted(command)}")
  if command == "eval" and not model:
    raise ValueError(f"{where}: an eval-only run needs a model (model: or eval.model)")
  if command == "eval" and not spec.eval:
    raise ValueError(f"{where}: command eval needs the sweep's eval: options (task, ...)")
  if command == "script" and not script:
    raise ValueError(f"{where}: command script needs script: a Python file")
  if command != "script" and (entry.args or entry.script):
    raise ValueError(f"{where}: script and args are for command script")
  if command in ("eval", "script") and sets:
    raise ValueError(f"{where}: set: is for the training commands, not {quoted(command)}")
  trains = command in MRO_COMMANDS[:3]
  return Run(entry.name, command, config if trains else None,
             (spec.set + sets) if trains else (), spec.eval, spec.sweep_dir / entry.name,
             model=entry.model if command == "eval" else None,
             script=str(Path(script).expanduser().resolve()) if command == "script" else None,
             args=(entry.args or spec.args) if command == "script" else (), hosts=hosts,
             resources=resources)


def commands(run: Run) -> list[list[str]]:
  """The run's programs, in order: ["mro", verb, ...] or ["python", script, ...]; training
  (or the script), then `mro eval` when the sweep has eval options."""
  cmds = []
  if run.command == "script":
    cmds.append(["python", run.script, "--workdir", str(run.workdir), *run.args])
  elif run.command != "eval":
    cmd = ["mro", run.command, "--config", run.config, "--workdir", str(run.workdir)]
    for s in run.sets:
      cmd += ["--set", s]
    cmds.append(cmd)
  if run.eval:
    ev = dict(run.eval)
    model = ev.pop("model", "best")
    if run.command == "eval":
      model = run.model or model
    elif model in ("best", "model"):
      model = str(run.workdir / model)
    cmd = ["mro", "eval", "--model", str(model), "--out", str(run.workdir / "eval.jsonl")]
    for key, value in ev.items():
      cmd += [f"--{key.replace('_', '-')}", str(value)]
    cmds.append(cmd)
  return cmds


def validate_configs(runs: list[Run]) -> None:
  """Loads every training run's config with its overrides and checks it whole for its
  command (unknown section or key, wrong type, a section's own checks, the checks across
  sections that the run would make as it starts: `mro.config.validate`), so a bad `set:`
  fails before any run starts."""
  for run in runs:
    if run.config is not None:
      try:
        load_config(run.config, list(run.sets), command=run.command)
      except (ValueError, OSError) as e:
        raise ValueError(f"run {quoted(run.name)}: {e}") from e
