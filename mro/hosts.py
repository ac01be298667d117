"""One process per host: joining the others, and what the processes agree on and share.

`mro train | rl | reject-sample | eval` run the same command on every host. `join` makes
the processes one JAX runtime (`jax.distributed.initialize`) before anything touches a
device:

  - flags (`--coordinator HOST:PORT --num-processes N --process-id I`), else
  - the environment the sweep backends set (MRO_COORDINATOR_ADDRESS, MRO_NUM_PROCESSES,
    MRO_PROCESS_ID; MRO_HEARTBEAT_S optional), else
  - a cluster JAX detects by itself: a TPU pod slice, a SLURM step of several tasks
    (`srun`), an Open MPI job of several ranks (`mpirun`), else
  - one process, nothing to join.

After joining, process 0 is the writer of a run's record; the others take part in the
collectives. The helpers below carry small Python values between processes (pickled,
through the JAX collectives over every process's devices, so they need no other
channel): `broadcast` process 0's value, `allgather` everyone's, `on_main` runs a step on
process 0 and gives every process its result or its error, `held_by_main` holds a lock
on process 0 for all (the workdir's or the results file's: one writer, so one holder),
`agree` refuses processes that were started with different settings, naming the fields.
With one process each is a plain call.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from mro.messages import quoted

HOST_ENV = ("MRO_COORDINATOR_ADDRESS", "MRO_NUM_PROCESSES", "MRO_PROCESS_ID")
HEARTBEAT_ENV = "MRO_HEARTBEAT_S"
T = TypeVar("T")


def detect_cluster(environ: Mapping[str, str], tpu_vm: bool | None = None) -> str | None:
  """The multi-process cluster this process was started in, as JAX detects it (None:
  none, or one of a single process). `tpu_vm`: whether this is a Cloud TPU VM (None: look
  for TPU chips and libtpu)."""
  def count(name: str) -> int:
    value = environ.get(name, "")
    return int(value) if value.isdigit() else 0
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
           "SLURM_LOCALID")
  if all(k in environ for k in slurm) and count("SLURM_NTASKS") > 1:
    return "SLURM"
  if count("OMPI_COMM_WORLD_SIZE") > 1:
    return "Open MPI"
  if tpu_vm is None:
    tpu_vm = bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")) and \
        importlib.util.find_spec("libtpu") is not None
  if tpu_vm and "TPU_SKIP_MDS_QUERY" not in environ:  # JAX asks the TPU VM's metadata
    return "TPU"
  return None


def _flag_values(coordinator, num_processes, process_id,
                 environ: Mapping[str, str]) -> tuple | None:
  """(coordinator, N, id, from where) from the flags, else the environment; None when
  neither names a coordinator. A partial setting is a ValueError naming what is missing."""
  flags = (coordinator, num_processes, process_id)
  names = ("--coordinator", "--num-processes", "--process-id")
  source = "flags"
  if all(v is None for v in flags):
    flags = tuple(environ.get(k) or None for k in HOST_ENV)
    names, source = HOST_ENV, "environment"
  if all(v is None for v in flags):
    return None
  missing = [n for n, v in zip(names, flags) if v is None]
  if missing:
    raise ValueError(f"joining other processes needs {', '.join(names)}; missing "
                     f"{', '.join(missing)}")
  address, n, i = flags
  try:
    n, i = int(n), int(i)
  except ValueError:
    raise ValueError(f"{names[1]} and {names[2]} must be integers, got {quoted(n)} and "
                     f"{quoted(i)}") from None
  if n < 1 or not 0 <= i < n:
    raise ValueError(f"{names[2]}={i} must be in 0..{names[1]}-1 = 0..{n - 1}")
  if ":" not in str(address):
    raise ValueError(f"{names[0]} must be HOST:PORT (process 0's host), got {quoted(address)}")
  return str(address), n, i, source


def join(coordinator: str | None = None, num_processes: int | None = None,
         process_id: int | None = None, environ: Mapping[str, str] | None = None,
         timeout_s: int = 300) -> str:
  """Joins the run's other processes (see the module); returns how, for a log line.
  Idempotent: a process that has joined already stays as it is."""
  environ = os.environ if environ is None else environ
  values = _flag_values(coordinator, num_processes, process_id, environ)
  if jax.distributed.is_initialized():
    return f"joined already: process {jax.process_index()} of {jax.process_count()}"
  heartbeat = int(environ.get(HEARTBEAT_ENV, "100"))
  if values is not None:
    address, n, i, source = values
    if n == 1:
      return "one process"
    jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=i,
                               initialization_timeout=timeout_s,
                               heartbeat_timeout_seconds=heartbeat)
    return f"process {i} of {n} (coordinator {address}, from the {source})"
  cluster = detect_cluster(environ)
  if cluster is None:
    return "one process"
  jax.distributed.initialize(initialization_timeout=timeout_s,
                             heartbeat_timeout_seconds=heartbeat)
  return f"process {jax.process_index()} of {jax.process_count()} ({cluster}, detected)"


def is_main() -> bool:
  """Whether this process writes the run's record (process 0; the only one)."""
  return jax.process_index() == 0


def _bucket(n: int) -> int:
  """Payload sizes rounded up to a power of two: few distinct shapes, few compiles."""
  return max(64, 1 << (max(n, 1) - 1).bit_length())


def broadcast(value: Any = None) -> Any:
  """Process 0's `value` on every process (each calls this; the others' is ignored)."""
  if jax.process_count() == 1:
    return value
  data = pickle.dumps(value) if is_main() else b""
  size = int(multihost_utils.broadcast_one_to_all(np.asarray([len(data)], np.int64))[0])
  buf = np.zeros(_bucket(size), np.uint8)
  buf[:len(data)] = np.frombuffer(data, np.uint8)
  out = multihost_utils.broadcast_one_to_all(buf)
  return pickle.loads(out[:size].tobytes())


def allgather(value: Any) -> list[Any]:
  """Every process's `value`, in process order (each calls this)."""
  if jax.process_count() == 1:
    return [value]
  data = pickle.dumps(value)
  sizes = multihost_utils.process_allgather(np.asarray([len(data)], np.int64))[:, 0]
  buf = np.zeros(_bucket(int(sizes.max())), np.uint8)
  buf[:len(data)] = np.frombuffer(data, np.uint8)
  rows = multihost_utils.process_allgather(buf)
  return [pickle.loads(row[:n].tobytes()) for row, n in zip(rows, sizes)]


def on_main(fn: Callable[[], T]) -> T:
  """`fn()` run on process 0 only; every process gets its result, or raises its error
  (the others as a ValueError quoting it), so no process goes on alone."""
  if jax.process_count() == 1:
    return fn()
  result, error = None, None
  if is_main():
    try:
      result = fn()
    except Exception as e:  # any error: the other processes must stop too
      error = e
  status = broadcast(("error", f"{type(error).__name__}: {error}") if error is not None
                     else ("ok", result))
  if error is not None:
    raise error
  if status[0] == "error":
    raise ValueError(f"process 0 stopped: {status[1]}")
  return status[1]


@contextlib.contextmanager
def held_by_main(hold: Callable[[], contextlib.AbstractContextManager]) -> Iterator[None]:
  """`hold()` (a lock) entered on process 0 only and held while the block runs, for every
  process: the others take no lock of their own (they would refuse each other on a shared
  workdir), and a refusal on process 0 stops every process at once (`on_main`)."""
  with contextlib.ExitStack() as stack:
    def enter() -> None:
      stack.enter_context(hold())
    on_main(enter)
    yield


def shared_directory(directory: str | Path, load: Callable[[Path], T]) -> T:
  """`load(directory)` on process 0; every other process loads a temporary copy of the
  directory's files that process 0 sends (it needs no access to the directory)."""
  directory = Path(directory)
  files = broadcast({f.name: f.read_bytes() for f in sorted(directory.iterdir())
                     if f.is_file()} if is_main() else None)
  if is_main():
    return load(directory)
  with tempfile.TemporaryDirectory(prefix="mro-shared-") as copy:
    for name, data in files.items():
      (Path(copy) / name).write_bytes(data)
    return load(Path(copy))


def barrier(name: str) -> None:
  """Waits until every process gets here."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def differences(values: list[Mapping[str, Any]]) -> list[str]:
  """One line per field where a process's settings differ from process 0's."""
  flat = [_flat(json.loads(json.dumps(v, default=str))) for v in values]
  lines = []
  for i, other in enumerate(flat[1:], start=1):
    for key in sorted(set(flat[0]) | set(other)):
      a, b = flat[0].get(key), other.get(key)
      if a != b:
        lines.append(f"{key}: {quoted(a)} (process 0) vs {quoted(b)} (process {i})")
  return lines


def agree(what: str, settings: Mapping[str, Any]) -> None:
  """ValueError on every process, naming the fields, unless all processes were given the
  same `settings` (a nested mapping): checked before any step."""
  lines = differences(allgather(dict(settings)))
  if lines:
    shown = lines[:20] + ([f"... and {len(lines) - 20} more"] if len(lines) > 20 else [])
    raise ValueError(f"the processes were started with different {what}s; start every "
                     "process with the same command:\n  " + "\n  ".join(shown))
