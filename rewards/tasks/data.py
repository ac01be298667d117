"""Where benchmark files live and how JSON-lines files are read.

Default location: `<repo>/experiments/data/<benchmark>/` (the offline copies shipped with
the repository, with their licences).
Any path the user gives wins: a file is read as is, a directory is searched for the
standard file names (`train.jsonl`, `test.jsonl`).

GSM8K and MATH500 files are read with the `datasets` JSON loader (local files need no
network; it caches an Arrow copy under the HF cache). Its errors do not name lines, so
on a parse failure the file is re-scanned with `json` to report the first bad line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "experiments" / "data"


def resolve_file(path: str | None, benchmark: str, filename: str) -> Path:
  """The file to read: `path` itself if it is a file, `path/filename` if it is a
  directory, else `DEFAULT_DATA_DIR/benchmark/filename`."""
  if path is None:
    candidate = DEFAULT_DATA_DIR / benchmark / filename
    hint = " (the shipped copy; pass --data FILE_OR_DIR to read another)"
  else:
    candidate = Path(path).expanduser()
    if candidate.is_dir():
      candidate = candidate / filename
    hint = ""
  if not candidate.is_file():
    raise ValueError(f"{benchmark} data file not found: {candidate}{hint}")
  return candidate


def first_bad_json_line(path: Path) -> str:
  """A description of the first line of `path` that is not a JSON object."""
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        return f"line {number}: invalid JSON ({e.msg})"
      if not isinstance(row, dict):
        return f"line {number}: expected a JSON object, got {type(row).__name__}"
  return "no malformed line found"


def read_jsonl_datasets(path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
  """Rows of a JSON-lines file via `datasets`; every row must have string `fields`.

  Row numbers in errors count non-empty lines from 1.
  """
  import datasets  # heavy import, deferred until a benchmark file is actually read

  try:
    table = datasets.load_dataset("json", data_files=str(path), split="train")
  except Exception as e:  # datasets wraps parse errors in several exception types
    raise ValueError(f"cannot read {path}: {first_bad_json_line(path)} ({e})") from e
  missing = [f for f in fields if f not in table.column_names]
  if missing:
    raise ValueError(f"{path}: missing field(s) {missing}; the file has {table.column_names}")
  rows = table.to_list()
  for number, row in enumerate(rows, start=1):
    for field in fields:
      if not isinstance(row[field], str):
        raise ValueError(f"{path} row {number}: field {field!r} must be a string, "
                         f"got {row[field]!r}")
  return rows


def read_jsonl_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
  """(line number, object) for every non-empty line, parsed with `json` (small files
  whose errors must name the line)."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {number}: invalid JSON ({e.msg})") from e
      if not isinstance(row, dict):
        raise ValueError(f"{path} line {number}: expected a JSON object")
      rows.append((number, row))
  return rows
