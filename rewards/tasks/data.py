"""Where benchmark files live and how JSON-lines files are read.

Default location: `<repo>/experiments/data/<benchmark>/` (the offline copies shipped with
the repository, with their licences). A Hugging Face hub dataset can be named instead
as `hf:NAME[:CONFIG]` (e.g. `hf:openai/gsm8k:main`, `hf:HuggingFaceH4/MATH-500`); it needs
network access (unset HF_DATASETS_OFFLINE) and the same fields as the files.
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

from mro import paths
from mro.messages import quoted

DEFAULT_DATA_DIR = paths.DATA


HUB_PREFIX = "hf:"


def is_hub(path: str | None) -> bool:
  return path is not None and str(path).startswith(HUB_PREFIX)


def read_hub(spec: str, split: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
  """Rows of split `split` of the hub dataset `hf:NAME[:CONFIG]` (string `fields`)."""
  import datasets  # deferred: a heavy import, needed only to read a hub dataset

  name, _, config = spec[len(HUB_PREFIX):].partition(":")
  if not name:
    raise ValueError(f"--data {quoted(spec)}: name a hub dataset, e.g. hf:openai/gsm8k:main")
  try:
    table = datasets.load_dataset(name, config or None, split=split)
  except Exception as e:  # offline, unknown name, missing split: all end here
    raise ValueError(f"cannot load hub dataset {quoted(name)} (config {config or 'default'}, "
                     f"split {quoted(split)}): {type(e).__name__}: {e}. Hub datasets need network "
                     "access (HF_DATASETS_OFFLINE unset); offline, pass a local file") from e
  missing = [f for f in fields if f not in table.column_names]
  if missing:
    raise ValueError(f"hub dataset {quoted(name)}: missing field(s) {missing}; it has "
                     f"{table.column_names}")
  return table.to_list()


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


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
  """A data file's text; a file that is not valid UTF-8 is a ValueError naming it and the
  first bad byte's line."""
  path = Path(path)
  raw = path.read_bytes()
  try:
    return raw.decode(encoding)
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise ValueError(f"{path} is not UTF-8 text: byte {e.start} (line {line}) is "
                     f"{quoted(raw[e.start:e.start + 1])}; save it as UTF-8") from None


def first_bad_json_line(path: Path) -> str:
  """A description of the first line of `path` that is not a JSON object."""
  try:
    read_jsonl_lines(path)
  except ValueError as e:
    return str(e).removeprefix(f"{path} ")
  return "no malformed line found"


def read_jsonl_datasets(path: Path, fields: tuple[str, ...]) -> list[dict[str, Any]]:
  """Rows of a JSON-lines file via `datasets`; every row must have string `fields`.

  Row numbers in errors count non-empty lines from 1.
  """
  import datasets  # heavy import, deferred until a benchmark file is actually read

  read_text(path)  # a non-UTF-8 file is refused by name before `datasets` sees it
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
        raise ValueError(f"{path} row {number}: field {quoted(field)} must be a string, "
                         f"got {quoted(row[field])}")
  return rows


def read_jsonl_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
  """(line number, object) for every non-empty line, parsed with `json` (small files
  whose errors must name the line)."""
  rows = []
  for number, line in enumerate(read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} line {number}: invalid JSON ({e.msg})") from e
    if not isinstance(row, dict):
      raise ValueError(f"{path} line {number}: expected a JSON object, got "
                       f"{type(row).__name__}")
    rows.append((number, row))
  return rows
