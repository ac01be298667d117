"""The workdir is the record of a run.

    workdir/config.json      resolved experiment config (every field)
    workdir/inputs.json      the content digest of every file or directory a setting names
                             (a path with a '/'), so a resumed run may name the same content
                             at another place (a moved or second checkout, another machine)
    workdir/tokenizer/       the tokenizer the run trained or was given
    workdir/checkpoints/N/   Orbax checkpoints: train state + {"data_position": ...}
    workdir/metrics.jsonl    one JSON object per logged step
    workdir/model/           the final model in portable HF format (+ tokenizer)
    workdir/extensions.jsonl each time a finished or running run was given more train.steps
                             (the only setting that may grow on resume; the schedule's
                             cosine then ends at the new last step)
    workdir/run.lock         while a run writes the workdir: its PID and host
                             (mro/locks.py); a second run on the workdir is refused

A verb's entry point (`mro train`, `reject-sample`, `rl`) is decorated with
`holding_lock`, so it holds the workdir's lock from its first file to its export.

Opening a workdir or a model directory for inference is `mro.loading`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mro import hosts, locks
from mro.files import (append_jsonl, make_directory, path_digest, path_stamp, read_jsonl,
                       write_atomic, write_json_atomic)
from mro.sampling.schedule import SamplerConfig
from mro.training.settings import RunConfig
@dataclasses.dataclass(frozen=True)
class Workdir:
  root: Path

  @property
  def config(self) -> Path:
    return self.root / "config.json"

  @property
  def inputs(self) -> Path:
    return self.root / "inputs.json"

  @property
  def tokenizer(self) -> Path:
    return self.root / "tokenizer"

  @property
  def checkpoints(self) -> Path:
    return self.root / "checkpoints"

  @property
  def metrics(self) -> Path:
    return self.root / "metrics.jsonl"

  @property
  def model(self) -> Path:
    return self.root / "model"


LOCK_FILE = "run.lock"


@contextlib.contextmanager
def lock(root: str | Path) -> Iterator[Path]:
  """Creates the workdir `root` if needed and holds its lock (mro/locks.py) while the
  block runs: a second run on it is refused naming this one's PID and host."""
  root = make_directory(root, "--workdir")
  with locks.hold(root / LOCK_FILE, f"workdir {root}", other="use another --workdir"):
    yield root


def holding_lock(run: Callable[..., Any]) -> Callable[..., Any]:
  """`run(cfg, workdir, ...)` holding the workdir's lock throughout (a verb's entry
  point: mro train, reject-sample, rl). In a program of several processes joined by
  jax.distributed, they first check that they were all given this config (refused by
  name otherwise, before anything is written); then process 0 holds the lock for all of
  them, and its refusal stops them all."""

  @functools.wraps(run)
  def locked_run(cfg, workdir, *args, **kwargs):
    hosts.agree("config", cfg.to_dict())
    with hosts.held_by_main(lambda: lock(workdir)):
      return run(cfg, workdir, *args, **kwargs)

  return locked_run


# Settings that may change between a run and its resumption (they do not change results).
IGNORED_ON_RESUME = {"train": ("progress", "wandb", "wandb_project", "log_every",
                               "keep_checkpoints", "checkpoint_every"),
                     "data": ("loss_chunk",),  # the same loss, computed in chunks
                     "sampler": tuple(f.name for f in dataclasses.fields(SamplerConfig))}


def _diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
  """(field, workdir's value, current value) of every setting that differs."""
  out = []
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _diff(va, vb, f"{prefix}{k}.")
    elif va != vb:
      out.append((f"{prefix}{k}", va, vb))
  return out


def _named_path(value: Any) -> Path | None:
  """The existing file or directory a setting's value names (a string with a '/'), else
  None."""
  if not (isinstance(value, str) and "/" in value):
    return None
  path = Path(value).expanduser()
  return path if path.exists() else None


def _named_paths(values: dict, prefix: str = "") -> dict[str, str]:
  """{field: value} of the settings that name an existing file or directory."""
  out = {}
  for k, v in values.items():
    if isinstance(v, dict):
      out.update(_named_paths(v, f"{prefix}{k}."))
    elif _named_path(v) is not None:
      out[f"{prefix}{k}"] = v
  return out


def _recorded_inputs(wd: Workdir) -> dict[str, dict]:
  """inputs.json: {field: {"path", "stamp", "sha256"}}; empty for a workdir from before it."""
  return json.loads(wd.inputs.read_text()) if wd.inputs.exists() else {}


def _same_content(recorded: dict[str, dict], field: str, saved: Any, now: Any) -> bool:
  """Whether the path setting `field`, recorded as `saved`, names the same content as
  `now`: by the digest `recorded` when the run started (inputs.json), else (a workdir from
  before that record) by the old path's content when it is still there."""
  now_path = _named_path(now)
  if now_path is None or not isinstance(saved, str):
    return False
  entry = recorded.get(field)
  if entry is not None and entry.get("path") == saved:
    return entry.get("sha256") == path_digest(now_path)
  old = Path(saved).expanduser()
  return old.exists() and path_digest(old) == path_digest(now_path)


def claim(root: str | Path, cfg: RunConfig) -> Workdir:
  """Creates the workdir, or checks that an existing one was started with this config."""
  wd = Workdir(make_directory(root, "--workdir"))
  if wd.config.exists():
    saved = json.loads(wd.config.read_text())
    now = json.loads(json.dumps(cfg.to_dict()))  # as saved: tuples become lists
    # A section or field added to the schema after the run started counts as its default.
    for section, values in json.loads(json.dumps(type(cfg)().to_dict())).items():
      saved_section = saved.setdefault(section, values)
      if isinstance(saved_section, dict) and isinstance(values, dict):
        for key, value in values.items():
          saved_section.setdefault(key, value)
    # model.vocab_size follows the tokenizer; the rest of IGNORED cannot change results.
    now["model"]["vocab_size"] = saved.get("model", {}).get("vocab_size")
    for section, keys in IGNORED_ON_RESUME.items():
      for key in keys:
        saved.get(section, {}).pop(key, None)
        now.get(section, {}).pop(key, None)
    old_steps, new_steps = saved.get("train", {}).get("steps"), now["train"].get("steps")
    extends = isinstance(old_steps, int) and isinstance(new_steps, int) and new_steps > old_steps
    if extends:  # a longer run continues this one; the cosine schedule follows the new end
      saved["train"]["steps"] = new_steps
    # A path that moved (another checkout, another machine) is the same setting when it
    # holds the same content.
    recorded = _recorded_inputs(wd)
    differences = [f"{field}: {a!r} (workdir) vs {b!r} (now)" for field, a, b in _diff(saved, now)
                   if not _same_content(recorded, field, a, b)]
    if extends and not differences:
      append_jsonl(wd.root / "extensions.jsonl", [{"from_steps": old_steps,
                                                   "to_steps": new_steps}])
    if differences:
      raise ValueError(f"{wd.root} holds a run with a different config; use a new workdir or "
                       "the same settings. Differences:\n  " + "\n  ".join(differences))
  return wd


def record_config(wd: Workdir, cfg: RunConfig) -> None:
  """Writes the run's resolved config (every field) to workdir/config.json and the
  content digest of each file or directory it names to workdir/inputs.json."""
  values = cfg.to_dict()
  before = _recorded_inputs(wd)
  inputs = {}
  for field, path in _named_paths(values).items():
    stamp, entry = path_stamp(path), before.get(field, {})
    if entry.get("path") != path or entry.get("stamp") != stamp:  # read only what changed
      entry = {"path": path, "stamp": stamp, "sha256": path_digest(path)}
    inputs[field] = entry
  write_json_atomic(wd.inputs, inputs)
  write_json_atomic(wd.config, values)


def append_metrics(path: Path, record: dict[str, Any]) -> None:
  append_jsonl(path, [record])


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
  """The step records of a metrics file (lines torn by a kill are skipped)."""
  return [r for r in read_jsonl(path) if "step" in r]


def truncate_metrics(path: Path, after_step: int) -> None:
  """Drops records of steps a resumed run will redo (written after the last checkpoint)
  and any line torn by a kill."""
  if not path.exists():
    return
  keep = [r for r in read_metrics(path) if r["step"] <= after_step]
  write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))
