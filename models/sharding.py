"""The one place where logical axis names meet mesh axes.

Every weight carries `logical_axes` metadata (see models/transformer.py). A mesh has
three axes: `data` (pure data parallel), `fsdp` (data parallel with sharded weights and
optimizer state) and `tensor` (Megatron-style splits of heads, MLP and vocabulary, and
the experts of a mixture-of-experts layer). A single device is a 1x1x1 mesh: there is no
second code path.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from mro.messages import quoted

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of axes, or None = replicated)
RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "expert": "tensor",  # MoE experts: each device its own (then their mlp stays whole)
    "vocab": "tensor",
    "norm": None,
    "length": None,
    # Activations (`constrain`, used at the output layer): rows stay split over
    # data x fsdp, the model dimension stays whole, tensor splits the vocabulary.
    "act_batch": ("data", "fsdp"),
    "act_length": None,
    "act_embed": None,
    "act_vocab": "tensor",
}

_ACTIVATION_MESH: contextvars.ContextVar = contextvars.ContextVar("activation_mesh",
                                                                  default=None)


@contextlib.contextmanager
def activation_mesh(mesh):
  """While a program is traced inside this context, `constrain` pins activations to their
  logical-axis sharding on `mesh` (None: no constraints, e.g. one device)."""
  token = _ACTIVATION_MESH.set(mesh)
  try:
    yield
  finally:
    _ACTIVATION_MESH.reset(token)


def constrain(x, axes: tuple[str | None, ...]):
  """`x` with a sharding constraint from its logical `axes` (identity outside
  `activation_mesh`). Without it, XLA's propagation may follow the weights' `fsdp`
  split of the model dimension and keep every row of the batch on every device."""
  mesh = _ACTIVATION_MESH.get()
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(axes, x.shape, mesh)))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = 1
  fsdp: int = 1
  tensor: int = 1

  def __post_init__(self):
    for axis in MESH_AXES:
      if getattr(self, axis) < 1:
        raise ValueError(f"mesh.{axis} must be >= 1, got {getattr(self, axis)}")

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.data, self.fsdp, self.tensor)

  @property
  def size(self) -> int:
    return math.prod(self.shape)


def parse_mesh(text: str) -> MeshConfig:
  """'data=8,fsdp=4,tensor=2' -> MeshConfig."""
  fields = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, _, value = part.partition("=")
    if name not in MESH_AXES or not value.strip().isdigit():
      raise ValueError(f"bad mesh entry {quoted(part)}; expected e.g. data=8,fsdp=4,tensor=2")
    fields[name] = int(value)
  return MeshConfig(**fields)


def make_mesh(cfg: MeshConfig = MeshConfig(), devices=None) -> jax.sharding.Mesh:
  """A mesh over the first cfg.size devices (all of `devices` when they are given)."""
  if devices is None:
    available = jax.devices()
    if cfg.size > len(available):
      raise ValueError(f"mesh {dict(zip(MESH_AXES, cfg.shape))} needs {cfg.size} devices, "
                       f"but only {len(available)} are available")
    devices = available[:cfg.size]
  if cfg.size != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, cfg.shape))} needs {cfg.size} devices, "
                     f"got {len(devices)}")
  return jax.sharding.Mesh(np.asarray(devices).reshape(cfg.shape), MESH_AXES)


def spec_for(axes: tuple[str | None, ...], shape: tuple[int, ...], mesh) -> PartitionSpec:
  """PartitionSpec for a value with these logical axes; a dimension that the mapped mesh
  axes do not divide evenly stays replicated (e.g. a 288-word vocabulary on 5 devices)."""
  if len(axes) != len(shape):
    raise ValueError(f"logical axes {axes} do not match shape {shape}")
  used: set[str] = set()
  spec = []
  for name, dim in zip(axes, shape):
    if name is not None and name not in RULES:
      raise ValueError(f"logical axis {quoted(name)} has no sharding rule; known: {sorted(RULES)}")
    target = RULES.get(name) if name else None
    mesh_axes = (target,) if isinstance(target, str) else tuple(target or ())
    mesh_axes = tuple(a for a in mesh_axes if mesh.shape[a] > 1 and a not in used)
    size = math.prod(mesh.shape[a] for a in mesh_axes)
    if not mesh_axes or dim % size:
      spec.append(None)
      continue
    used.update(mesh_axes)
    spec.append(mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
  return PartitionSpec(*spec)


def _axes_of(variable) -> tuple:
  meta = variable.get_metadata()
  if "logical_axes" not in meta:
    raise ValueError(f"parameter of shape {variable.shape} has no logical_axes annotation")
  return meta["logical_axes"]


def tree_shardings(tree, mesh):
  """Shardings for any pytree mixing nnx Variables (by their logical axes) and plain
  arrays (replicated), e.g. an optimizer state."""
  def one(x):
    if isinstance(x, nnx.Variable):
      return NamedSharding(mesh, spec_for(_axes_of(x), tuple(x.shape), mesh))
    return NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis split over data and fsdp; the rest replicated. With ndim=1 the
  spec is a prefix that fits arrays of any rank (e.g. a batch dict of [B] and [B, L])."""
  axes = tuple(a for a in RULES["batch"] if mesh.shape[a] > 1)
  lead = axes if len(axes) > 1 else (axes[0] if axes else None)
  return NamedSharding(mesh, PartitionSpec(lead, *([None] * (ndim - 1))))


def data_parallel_size(mesh) -> int:
  """How many ways a batch's rows are split (data x fsdp; 1 without a mesh)."""
  return 1 if mesh is None else math.prod(mesh.shape[a] for a in RULES["batch"])


def check_batch_divides(batch: int, mesh) -> None:
  """ValueError unless `batch` rows split evenly over the data-parallel axes."""
  n = data_parallel_size(mesh)
  if batch % n:
    raise ValueError(f"batch size {batch} is not divisible by the data-parallel mesh size "
                     f"{n} (data x fsdp)")


def place_params(params, mesh):
  """Parameters (an nnx state: each weight by its logical axes; plain leaves replicated)
  on `mesh`. Already-placed arrays are not copied."""
  return jax.device_put(params, tree_shardings(params, mesh))


def shard_batch(tree, mesh):
  """Arrays with a leading batch axis (numpy, jax or PRNG-key arrays) split over the
  data-parallel axes. Every process passes the same full batch (works with several
  processes, where numpy inputs cannot go to a sharded jit directly)."""
  def one(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = jax.device_put(jax.random.key_data(x), batch_sharding(mesh, x.ndim + 1))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if np.ndim(x) == 0:
      raise ValueError("a batch entry has no batch axis (a scalar)")
    check_batch_divides(np.shape(x)[0], mesh)
    return jax.device_put(x, batch_sharding(mesh, np.ndim(x)))
  return jax.tree.map(one, tree)


def process_rows(mesh, batch: int) -> np.ndarray:
  """The rows of a global batch of `batch` rows that this process's devices hold (split
  over data x fsdp as `batch_sharding`), in increasing order: what this process feeds to
  `from_process_rows`. One process: every row."""
  check_batch_divides(batch, mesh)
  index = batch_sharding(mesh).addressable_devices_indices_map((batch,))
  rows = {r for idx in index.values() for r in range(*idx[0].indices(batch))}
  return np.asarray(sorted(rows), np.int64)


def from_process_rows(tree, mesh, batch: int):
  """The global batch (split over data x fsdp) from this process's rows of it
  (`process_rows`: numpy arrays whose first axis holds those rows, in that order). Each
  process builds only its share; the result is the same global array for any number of
  processes (`jax.make_array_from_process_local_data`)."""
  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x,
                                                  (batch, *x.shape[1:]))
  return jax.tree.map(one, tree)


def abstract_arrays(tree, shardings):
  """ShapeDtypeStructs carrying `shardings` (as from tree_shardings) for a tree of arrays
  or abstract values, nnx Variables kept: what `jit(...).lower` takes, nothing allocated."""
  def one(x, sharding):
    if isinstance(x, nnx.Variable):
      return x.replace(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding))
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree.map(one, tree, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))


def host_array(x) -> np.ndarray:
  """A (possibly sharded, possibly multi-process) array as one numpy array on this host.
  Collective when some shards live on other processes: every process must call it."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if x.is_fully_replicated:  # every process holds all of it: no gather
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))
