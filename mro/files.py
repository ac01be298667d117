"""The three ways the toolkit writes and reads its own files, each in one place.

- `append_jsonl`: one JSON object per line, appended, flushed and fsynced, so a record
  that was reported is on disk (metrics, eval results, generations, sweep summaries).
  A file whose last line was torn (no newline: a kill or a full disk mid-write) has that
  fragment moved to `<file>.torn` first, said so on stderr, so the next record starts on
  a fresh line and is never glued to it.
- `read_jsonl`: the objects of a JSON-lines file, skipping lines that are not complete
  JSON objects (the last line of a file torn by a kill); a missing file has none.
- `load_yaml`: a user's YAML (a config, a sweep, a `--set` value) as plain data, refusing
  aliases (`*name`: configs need none, and nested ones expand without bound) and tags
  that are not YAML's own (`!!python/...`), and naming the source, line and column of any
  error in one bounded line.
- `check_distinct_paths`: refuses one command's outputs (and inputs) that name the same
  file, before anything is written, so one never replaces another.
- `check_writable`: refuses outputs that could not be written (a directory, a path under a
  file, a read-only place), before the work that would fill them.
- `make_directory`: creates a directory (a workdir) or says why it cannot be one.
- `write_atomic` / `write_json_atomic` / `save_npz_atomic`: write a temporary file beside
  the target, fsync it and rename it into place, so a reader sees the old file or the
  new one, never half of one.
- `digest` / `path_digest`: sha256 of files' names (relative to a root) and bytes: what
  they hold, not where they lie; `stamp` / `path_stamp`: their sizes and times, which
  tell when a digest is still current.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mro.messages import shortened


def append_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
  """Appends one JSON line per record, then flushes and fsyncs; a torn last line is set
  aside first (`repair_torn_tail`)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records)
  repair_torn_tail(path)
  with path.open("a", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def torn_path(path: str | Path) -> Path:
  """Where `repair_torn_tail` puts the torn fragments of `path`."""
  path = Path(path)
  return path.with_name(path.name + ".torn")


def repair_torn_tail(path: str | Path) -> None:
  """Makes `path` end on a line boundary. A last line without its newline is completed
  when it is a whole JSON object; otherwise (a fragment torn by a kill or a full disk) it
  is appended to `<path>.torn`, cut from `path`, and said so on stderr."""
  path = Path(path)
  if not path.exists() or path.stat().st_size == 0:
    return
  with path.open("r+b") as f:
    f.seek(-1, os.SEEK_END)
    if f.read(1) == b"\n":
      return
    cut = _last_line_start(f)
    f.seek(cut)
    fragment = f.read()
    if parse_jsonl_line(fragment.decode("utf-8", errors="replace")) is not None:
      f.seek(0, os.SEEK_END)
      f.write(b"\n")  # a complete record that only lacks its newline: keep it
    else:
      with torn_path(path).open("ab") as t:
        t.write(fragment + b"\n")
        t.flush()
        os.fsync(t.fileno())
      f.truncate(cut)
      print(f"[files] {path}: its last line was torn ({len(fragment)} bytes, no newline); "
            f"moved to {torn_path(path)}, new records start on a fresh line",
            file=sys.stderr, flush=True)
    f.flush()
    os.fsync(f.fileno())


def _last_line_start(f, chunk: int = 1 << 16) -> int:
  """The offset just after the last newline of the open binary file `f` (0: none)."""
  end = f.seek(0, os.SEEK_END)
  while end > 0:
    start = max(0, end - chunk)
    f.seek(start)
    i = f.read(end - start).rfind(b"\n")
    if i >= 0:
      return start + i + 1
    end = start
  return 0


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


class _PlainLoader(yaml.SafeLoader):
  """YAML's safe loader that refuses an alias before it is expanded, and a tag it has no
  constructor for (`!!python/...`) before it is read."""

  def compose_node(self, parent, index):
    event = self.peek_event()
    if isinstance(event, yaml.AliasEvent):
      raise _Refused("YAML aliases (*name) are not allowed: write the value out",
                     event.start_mark)
    tag = getattr(event, "tag", None)
    if tag and tag not in self.yaml_constructors:
      written = "!!" + tag[len(_STANDARD):] if tag.startswith(_STANDARD) else tag
      raise _Refused(f"YAML tags such as {shortened(written, 60)} are not allowed: "
                     "write plain values", event.start_mark)
    return super().compose_node(parent, index)


_STANDARD = "tag:yaml.org,2002:"


class _Refused(yaml.YAMLError):
  def __init__(self, problem: str, mark):
    super().__init__(problem)
    self.problem, self.problem_mark = problem, mark


def load_yaml(text: str, where: str) -> Any:
  """YAML `text` as plain data (no tags beyond YAML's own, no aliases), or a ValueError
  of one bounded line that names `where` (a file, or an option and its value), what is
  wrong and where (line, column)."""
  try:
    return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 (a SafeLoader subclass)
  except yaml.YAMLError as e:
    raise ValueError(f"{where}: {_yaml_problem(e)}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
  """What is wrong, on one line: the problem and its line and column (not yaml's quoted
  excerpt of the input)."""
  problem = getattr(e, "problem", None)
  if problem is None:
    return f"not valid YAML: {shortened(' '.join(str(e).split()), 200)}"
  mark = getattr(e, "problem_mark", None)
  at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
  if not isinstance(e, _Refused):
    context = getattr(e, "context", None)
    problem = f"not valid YAML: {problem}" + (f", {context}" if context else "")
  return shortened(" ".join(problem.split()), 300) + at


def check_distinct_paths(paths: Mapping[str, str | Path | None]) -> None:
  """Raises ValueError naming both options when two of `paths` (option -> path; None:
  not given) resolve to the same file."""
  seen: dict[Path, str] = {}
  for option, path in paths.items():
    if path is None or path == "":
      continue
    resolved = Path(path).expanduser().resolve()
    if resolved in seen:
      raise ValueError(f"{seen[resolved]} and {option} name the same file ({resolved}); "
                       "give each its own path")
    seen[resolved] = option


def _existing_ancestor(path: Path) -> Path:
  """`path` or its nearest ancestor that exists (as anything)."""
  while not path.exists() and path != path.parent:
    path = path.parent
  return path


def _not_a_directory(path: Path) -> Path | None:
  """The first ancestor of `path` that exists and is not a directory, if any."""
  for ancestor in reversed(path.parents):
    if ancestor.exists() and not ancestor.is_dir():
      return ancestor
  return None


def check_writable(paths: Mapping[str, str | Path | None], *, directory: bool = False) -> None:
  """Raises ValueError naming the option when one of `paths` (option -> path; None: not
  given) could not be written as a file (as a directory, with `directory`): an empty
  name, a directory where a file should be (or a file where a directory should be), a
  path under a file, or a place this process may not write. Creates nothing."""
  kind = "directory" if directory else "file"
  for option, given in paths.items():
    if given is None:
      continue
    if str(given).strip() == "":
      raise ValueError(f"{option} is empty: give a {kind} path")
    path = Path(given).expanduser().absolute()
    if not directory and (path.is_dir() or str(given).endswith(os.sep)):
      raise ValueError(f"{option} {given} is a directory: give a file path")
    if directory and path.exists() and not path.is_dir():
      raise ValueError(f"{option} {given} is a file: give a directory path")
    if (blocker := _not_a_directory(path)) is not None:
      raise ValueError(f"{option} {given} cannot be written: {blocker} is a file, not a "
                       "directory")
    target = path if path.exists() else _existing_ancestor(path)
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
      raise ValueError(f"{option} {given} cannot be written: {target} is not writable "
                       "by this user")


def make_directory(path: str | Path, what: str) -> Path:
  """Creates the directory `path` (and its parents) unless it exists, or raises
  ValueError naming `what` when it cannot be one (a file there, a file above it, no
  permission)."""
  path = Path(path)
  if path.exists() and not path.is_dir():
    raise ValueError(f"{what} {path} is a file, not a directory: give a directory")
  if (blocker := _not_a_directory(path)) is not None:
    raise ValueError(f"{what} {path} cannot be created: {blocker} is a file, not a "
                     "directory")
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ValueError(f"{what} {path} cannot be created: {e.strerror or e}") from None
  return path


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


def digest(root: str | Path, names: Iterable[str]) -> str:
  """sha256 of the files `names` under `root`, in the order given: each one's name
  (relative to `root`) and then its bytes, so a copy elsewhere has the same digest."""
  h = hashlib.sha256()
  for name in names:
    h.update(str(name).encode() + b"\0")
    with open(Path(root) / name, "rb") as f:
      for block in iter(lambda: f.read(1 << 24), b""):
        h.update(block)
  return h.hexdigest()


def _files_under(path: Path) -> tuple[Path, list[str]]:
  """(root, names): every file under a directory (sorted relative names), or a file."""
  if path.is_dir():
    return path, sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file())
  return path.parent, [path.name]


def path_digest(path: str | Path) -> str:
  """`digest` of a file, or of every file under a directory (sorted by relative name)."""
  return digest(*_files_under(Path(path)))


def stamp(root: str | Path, names: Iterable[str]) -> list[list]:
  """[name, size, modification time in ns] of each of the files `names` under `root`:
  while it is unchanged, so is their `digest` (what saves reading the files again)."""
  return [[name, (st := (Path(root) / name).stat()).st_size, st.st_mtime_ns]
          for name in names]


def path_stamp(path: str | Path) -> list[list]:
  """`stamp` of the files `path_digest` reads."""
  return stamp(*_files_under(Path(path)))
