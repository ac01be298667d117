"""A lock that keeps two processes from writing the same files at once: a training workdir
(`mro train`, `reject-sample`, `rl`) or an eval's results file (`mro eval --out`).

`hold(path, what)` creates the lock file `path`, holding the owner's PID, host, command
line and start time, and takes an exclusive `flock` on it for as long as the owner runs
(the kernel drops a flock when its process ends, however it ends). Another process is
refused at once with a ValueError naming `what` and the owner's PID and host:

- when the flock is taken (the owner is running on this host, or on a host whose shared
  file system carries flocks), or
- when the file names a live process of this host, or a process of another host (whether
  it still runs cannot be seen from here: the message says to delete the file if not).

A file left by a process of this host that no longer runs (a kill -9, a power cut) is
stale: it is taken over, and said so on stderr. The owner deletes the file as it
releases the lock, on return and on exceptions alike.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mro.messages import shortened


@contextlib.contextmanager
def hold(path: str | Path, what: str, *, other: str = "") -> Iterator[Path]:
  """Holds the lock file `path` while the block runs (see the module docstring). `what`
  names the thing locked in messages ("workdir runs/x"); `other` is the alternative a
  refused user has ("use another --workdir")."""
  path = Path(path)
  fd = _acquire(path, what, other)
  try:
    yield path
  finally:
    _release(path, fd)


def _acquire(path: Path, what: str, other: str) -> int:
  for _ in range(10):  # retried only when the file is deleted between open and flock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      flocked = _flock(fd)
      if flocked is False:
        raise ValueError(_held(what, _read(fd), path, other))
      if not _is_file_of(fd, path):
        os.close(fd)
        continue
      holder = _read(fd)
      if holder is not None and not _ours(holder):
        if _alive(holder) is not False:
          raise ValueError(_held(what, holder, path, other))
        print(f"[lock] {what}: its lock {path} names PID {holder.get('pid')} on "
              f"{holder.get('host')}, which is no longer running; taken over",
              file=sys.stderr, flush=True)
      elif holder is None and os.fstat(fd).st_size:
        print(f"[lock] {what}: its lock {path} was unreadable (torn by a crash); taken over",
              file=sys.stderr, flush=True)
      _write(fd, _record())
      return fd
    except BaseException:
      os.close(fd)
      raise
  raise ValueError(f"{what}: could not take its lock {path} (deleted again and again)")


def _release(path: Path, fd: int) -> None:
  try:
    if _is_file_of(fd, path):
      path.unlink()
  finally:
    os.close(fd)  # drops the flock


def _flock(fd: int) -> bool | None:
  """True: locked; False: another process holds it; None: the file system has no flock
  (then the recorded PID alone decides)."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False
  except OSError as e:
    if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
      return None
    raise


def _is_file_of(fd: int, path: Path) -> bool:
  """Whether `fd` is still the file at `path` (a releasing owner deletes it)."""
  try:
    return os.path.samestat(os.fstat(fd), os.stat(path))
  except FileNotFoundError:
    return False


def _record() -> dict[str, Any]:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "command": shortened(" ".join(sys.argv), 300),
          "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _read(fd: int) -> dict[str, Any] | None:
  try:
    record = json.loads(os.pread(fd, 4096, 0).decode("utf-8", errors="replace"))
  except json.JSONDecodeError:
    return None
  return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def _write(fd: int, record: dict[str, Any]) -> None:
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
  os.fsync(fd)


def _ours(holder: dict[str, Any]) -> bool:
  return holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()


def _alive(holder: dict[str, Any]) -> bool | None:
  """Whether the recorded process runs: None when it is of another host."""
  if holder.get("host") != socket.gethostname():
    return None
  try:
    os.kill(holder["pid"], 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # it exists, as another user's process
    return True
  return True


def _held(what: str, holder: dict[str, Any] | None, path: Path, other: str) -> str:
  if holder is None:
    return (f"{what} is in use by another process (it is taking the lock {path}); wait "
            f"for it to finish{', or ' + other if other else ''}")
  host = holder.get("host")
  here = host == socket.gethostname()
  return (f"{what} is in use by PID {holder.get('pid')} on host {shortened(str(host), 80)}"
          f"{'' if here else ' (another host)'}, since {shortened(str(holder.get('since')), 40)}"
          f" ({shortened(str(holder.get('command')), 100)}); wait for it to finish"
          f"{', or ' + other if other else ''}. If that process is no longer running, "
          f"delete {path}")
