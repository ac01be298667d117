"""Orbax checkpoints of the whole training state plus JSON metadata (data position).

Orbax writes each step into a temporary directory and renames it when complete, so a
crash mid-save never leaves a half-written checkpoint that restore would pick up. After
a save, the size of every file of the step is recorded in `<step>/file_sizes.json`; a
restore first compares them, so a truncated or emptied file is found by name before
Orbax reads anything. (An Orbax restore that fails midway leaves its other reads in
flight, and their completions then hit a closed event loop: dozens of "Event loop is
closed" tracebacks printed as unraisable exceptions.) With several processes every one
writes its shards of a checkpoint and process 0 its metadata; process 0 judges damage and
sets damaged checkpoints aside, so the directory must be one that every process sees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from mro import hosts
from mro.files import write_json_atomic
from mro.messages import quoted

SIZES_FILE = "file_sizes.json"


class Checkpointer:
  """The run's checkpoint manager; a context manager (or call `close()`), so Orbax's
  threads and file handles are released on every path, errors included."""

  def __init__(self, directory: str | Path, keep: int):
    # Resolved: every process names the same directory to Orbax, whatever link it came by.
    self.directory = Path(directory).resolve()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      _record_sizes(self.directory / str(step))

  def restore(self, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
    """Restores into the structure, dtypes and shardings of `like` (arrays or abstract)."""
    def target(x):
      sharding = getattr(x, "sharding", None)
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    abstract = jax.tree.map(target, like)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_latest_intact(self, like: Any, set_aside: bool = False
                            ) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, meta) of the newest checkpoint that restores; None if there is no
    checkpoint. A damaged one (a file missing, truncated or emptied since the save, by its
    `file_sizes.json`) is skipped with a line on stderr naming it and why; with `set_aside`
    (training only: read-only verbs never move files) it is also moved to `<step>.damaged`
    (kept, and out of the way of the step's next save). A checkpoint whose files are as
    saved but that does not restore into `like` (config.json changed since: other shapes)
    is never moved: ValueError naming it. If every one is damaged, a ValueError lists them."""
    skipped = []
    try:
      return self._restore_newest(like, skipped, set_aside)
    finally:
      if skipped and set_aside:
        self.manager.reload()

  def _restore_newest(self, like: Any, skipped: list[str], set_aside: bool):
    for step in sorted(self.all_steps(), reverse=True):
      step_dir = self.directory / str(step)
      reason = hosts.on_main(lambda: _damage(step_dir))  # one verdict for every process
      if reason is not None:
        skipped.append(f"step {step}: {reason}")
        if hosts.is_main():
          where = f"moved to {_set_aside(step_dir).name}" if set_aside else "left in place"
          print(f"checkpoint {step_dir} is damaged and was skipped ({reason}); {where}",
                file=sys.stderr, flush=True)
        hosts.barrier("checkpoint set aside")
        continue
      try:
        state, meta = self.restore(step, like)
        if not isinstance(meta, dict) or "data_position" not in meta:
          raise ValueError(f"its metadata has no data position: {quoted(meta)}"[:300])
      except Exception as e:  # orbax/tensorstore raise many kinds
        raise ValueError(f"checkpoint {step_dir} does not restore ({_first_line(e)}); its "
                         "files are as saved, so it is left in place: does the workdir's "
                         "config.json still describe the run that wrote it?") from None
      return step, state, meta
    if skipped:
      raise ValueError(f"no intact checkpoint in {self.directory}; every one is damaged:\n  "
                       + "\n  ".join(skipped))
    return None

  def close(self) -> None:
    self.manager.close()


def _record_sizes(step_dir: Path) -> None:
  sizes = {str(f.relative_to(step_dir)): f.stat().st_size
           for f in sorted(step_dir.rglob("*")) if f.is_file() and SIZES_FILE not in f.name}
  write_json_atomic(step_dir / SIZES_FILE, sizes)


def _check_sizes(step_dir: Path) -> None:
  """Raises ValueError naming the first file of the step whose size changed since the
  save (or that is gone). A checkpoint saved without the record is not checked."""
  record = step_dir / SIZES_FILE
  if not record.exists():
    return
  for name, size in json.loads(record.read_text()).items():
    path = step_dir / name
    if not path.is_file():
      raise ValueError(f"{name} is missing")
    if path.stat().st_size != size:
      raise ValueError(f"{name} has {path.stat().st_size} bytes, {size} when saved")


def _damage(step_dir: Path) -> str | None:
  """Why the checkpoint in `step_dir` is damaged (`_check_sizes`), None if it is not."""
  try:
    _check_sizes(step_dir)
  except (ValueError, OSError) as e:  # a record that does not parse is damage too
    return _first_line(e)
  return None


def _first_line(e: Exception) -> str:
  """`Type: first line of the message`, at most 300 characters."""
  return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


def set_aside_checkpoints(directory: str | Path) -> list[Path]:
  """The checkpoints of `directory` that a training run set aside as damaged."""
  directory = Path(directory)
  return sorted(directory.glob("*.damaged*")) if directory.is_dir() else []


def _set_aside(path: Path) -> Path:
  """Renames a damaged checkpoint directory to `<name>.damaged[.N]`; returns the new path."""
  target = path.with_name(path.name + ".damaged")
  n = 1
  while target.exists():
    target = path.with_name(f"{path.name}.damaged.{n}")
    n += 1
  path.rename(target)
  return target
