"""Where the repository's own files are: the one place that knows the layout on disk.

The packages `models`, `rewards`, `mro` and `experiments` sit side by side, in a checkout
(an editable install) and in site-packages (a wheel, which ships the configs, sweeps,
shipped models and benchmark data as package data), so every location is found from
this file the same way in both. This module imports nothing from the project, so every
layer may use it (tests/test_layers.py).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout, or site-packages
EXPERIMENTS = ROOT / "experiments"
CONFIGS = EXPERIMENTS / "configs"  # shipped experiment configs (`--config NAME`)
MODELS = EXPERIMENTS / "models"  # shipped models (`--model default`, ...)
DATA = EXPERIMENTS / "data"  # benchmark files (GSM8K, MATH500, Sudoku splits)


def relative(path: str | Path | None) -> str | None:
  """An existing `path` relative to ROOT when it lies inside it (what result records
  store, so that they mean the same in every clone), else absolute; a path that does not
  exist (a hub dataset `hf:...`) as given; None stays None."""
  if path is None:
    return None
  p = Path(path).expanduser()
  if not p.exists():
    return str(path)
  p = p.resolve()
  return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


@functools.cache
def git_commit() -> str | None:
  """The checkout's commit (with `+dirty` when tracked files differ from it); None when
  ROOT is not the top of a git checkout (an installed wheel) or git is missing."""
  def git(*args: str) -> str | None:
    try:
      out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError):
      return None
    return out.stdout.strip() if out.returncode == 0 else None

  top = git("rev-parse", "--show-toplevel")
  if top is None or Path(top).resolve() != ROOT:  # e.g. site-packages inside a checkout
    return None
  head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
  if head is None:
    return None
  return head + ("+dirty" if status else "")
