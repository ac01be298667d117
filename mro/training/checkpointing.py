"""Orbax checkpoints of the whole training state plus JSON metadata (data position).

Orbax writes each step into a temporary directory and renames it when complete, so a
crash mid-save never leaves a half-written checkpoint that restore would pick up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, directory: str | Path, keep: int):
    self.directory = Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def restore(self, step: int, like: Any) -> tuple[Any, dict[str, Any]]:
    """Restores into the structure, dtypes and shardings of `like` (arrays or abstract)."""
    def target(x):
      sharding = getattr(x, "sharding", None)
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    abstract = jax.tree.map(target, like)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def restore_latest_intact(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, meta) of the newest checkpoint that restores; None if there is no
    checkpoint. A damaged one (truncated array file, emptied metadata, ...) is skipped
    with a line on stderr naming it and why, and moved aside to `<step>.damaged` (kept,
    not deleted, and out of the way of the step's next save); if none restores, a
    ValueError lists them."""
    skipped = []
    try:
      return self._restore_newest(like, skipped)
    finally:
      if skipped:
        self.manager.reload()

  def _restore_newest(self, like: Any, skipped: list[str]):
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, like)
        if not isinstance(meta, dict) or "data_position" not in meta:
          raise ValueError(f"its metadata has no data position: {meta!r}")
      except Exception as e:  # orbax/tensorstore raise many kinds on damaged files
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        skipped.append(f"step {step}: {type(e).__name__}: {reason}")
        aside = _set_aside(self.directory / str(step))
        print(f"checkpoint {self.directory / str(step)} is damaged and was skipped "
              f"({type(e).__name__}: {reason}); moved to {aside.name}", file=sys.stderr,
              flush=True)
        continue
      return step, state, meta
    if skipped:
      raise ValueError(f"no intact checkpoint in {self.directory}; every one failed to "
                       "restore:\n  " + "\n  ".join(skipped))
    return None

  def close(self) -> None:
    self.manager.close()


def _set_aside(path: Path) -> Path:
  """Renames a damaged checkpoint directory to `<name>.damaged[.N]`; returns the new path."""
  target = path.with_name(path.name + ".damaged")
  n = 1
  while target.exists():
    target = path.with_name(f"{path.name}.damaged.{n}")
    n += 1
  path.rename(target)
  return target
