"""The three ways the toolkit writes and reads its own files, each in one place.

- `append_jsonl`: one JSON object per line, appended, flushed and fsynced, so a record
  that was reported is on disk (metrics, eval results, generations, sweep summaries).
- `read_jsonl`: the objects of a JSON-lines file, skipping lines that are not complete
  JSON objects (the last line of a file torn by a kill); a missing file has none.
- `write_atomic` / `write_json_atomic` / `save_npz_atomic`: write a temporary file beside
  the target, fsync it and rename it into place, so a reader sees the old file or the
  new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def append_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
  """Appends one JSON line per record, then flushes and fsyncs."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records)
  with path.open("a", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def parse_jsonl_line(line: str) -> dict[str, Any] | None:
  """The object on one line, or None for a blank, torn or non-object line."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
  """Every complete JSON object of a JSON-lines file ([] if the file does not exist)."""
  path = Path(path)
  if not path.exists():
    return []
  with path.open(encoding="utf-8", errors="replace") as f:
    return [r for line in f if (r := parse_jsonl_line(line)) is not None]


def write_atomic(path: str | Path, data: str | bytes) -> None:
  """Replaces `path` with `data` atomically (temporary file + fsync + rename)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  with tmp.open("wb") as f:
    f.write(data.encode("utf-8") if isinstance(data, str) else data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj: Any) -> None:
  write_atomic(path, json.dumps(obj, indent=2) + "\n")


def save_npz_atomic(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
  """`np.savez` into a temporary file renamed into place."""
  path = Path(path)
  tmp = path.with_name(f".{path.stem}.tmp.npz")
  with tmp.open("wb") as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
