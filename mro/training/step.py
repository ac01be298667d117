"""One pure train step, jitted once, and the loop around it.

`train_step(state, batch) -> (state, metrics)` computes the gradient of a pluggable
`loss_fn(apply, params, batch, key) -> (loss, metrics)` (accumulated over micro-batches
with a `lax.scan`), clips it, and applies AdamW with warmup + cosine decay. It is jitted
once with the state donated and its shardings declared from the logical axes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from models.config import ModelConfig
from models.sharding import abstract_arrays, activation_mesh, batch_sharding, tree_shardings
from models.transformer import ModelApply, init_model
from mro.training.settings import TrainConfig

LossFn = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, dict]]


class TrainState(NamedTuple):
  step: jax.Array  # int32[]: optimizer updates applied so far
  params: Any  # nnx.State of the model's Params
  opt_state: Any
  rng: jax.Array  # uint32[2]: raw PRNG key (checkpointable)


class NonFiniteLossError(ValueError):
  """A NaN/Inf loss, gradient norm or weight stopped training (the CLI prints it as one
  error line)."""


def lr_schedule(cfg: TrainConfig) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.effective_warmup,
      decay_steps=cfg.steps, end_value=cfg.lr * cfg.min_lr_ratio)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW; weight decay on matrices only (not norms)."""
  decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                  mask=decay_mask))


def init_state(model_cfg: ModelConfig, optimizer, seed: int, mesh, params=None):
  """(apply, TrainState, state shardings); fresh parameters unless `params` is given."""
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: init_model(model_cfg, seed)))
  param_sh = tree_shardings(abstract, mesh)
  if params is None:
    make = lambda: nnx.split(init_model(model_cfg, seed))[1]
    params = jax.jit(make, out_shardings=param_sh)()
  else:  # a copy: the train step donates its state, the caller keeps its arrays
    params = jax.device_put(jax.tree.map(lambda x: jnp.array(x, copy=True), params), param_sh)
  opt_sh = tree_shardings(jax.eval_shape(optimizer.init, params), mesh)
  opt_state = jax.jit(optimizer.init, out_shardings=opt_sh)(params)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = TrainState(replicated, param_sh, opt_sh, replicated)
  state = TrainState(jax.device_put(jnp.zeros((), jnp.int32), replicated), params, opt_state,
                     jax.device_put(jax.random.PRNGKey(seed), replicated))
  return ModelApply(graphdef), state, shardings


def abstract_state(model_cfg: ModelConfig, optimizer, mesh):
  """(apply, TrainState of ShapeDtypeStructs carrying shardings, shardings): what
  `jit_train_step(...).lower(state, batch)` takes to compile ahead of time (mro plan).
  Nothing is allocated, so it works for any model size."""
  graphdef, params = nnx.split(nnx.eval_shape(lambda: init_model(model_cfg, 0)))
  opt_state = jax.eval_shape(optimizer.init, params)
  param_sh, opt_sh = tree_shardings(params, mesh), tree_shardings(opt_state, mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  shardings = TrainState(replicated, param_sh, opt_sh, replicated)
  state = TrainState(jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
                     abstract_arrays(params, param_sh), abstract_arrays(opt_state, opt_sh),
                     jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated))
  return ModelApply(graphdef), state, shardings


def _grads(apply, loss_fn: LossFn, params, batch, key, grad_accum: int):
  """Mean loss and gradient over `grad_accum` micro-batches; metrics are summed (counts)."""
  grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
  if grad_accum == 1:
    (loss, aux), grads = grad_fn(apply, params, batch, key)
    return loss, grads, aux
  micro = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)

  def body(grad_sum, inputs):
    mb, k = inputs
    (loss, aux), g = grad_fn(apply, params, mb, k)
    return jax.tree.map(jnp.add, grad_sum, g), (loss, aux)

  zeros = jax.tree.map(jnp.zeros_like, params)
  grad_sum, (losses, auxes) = jax.lax.scan(body, zeros, (micro, jax.random.split(key, grad_accum)))
  grads = jax.tree.map(lambda g: g / grad_accum, grad_sum)
  return losses.mean(), grads, jax.tree.map(jnp.sum, auxes)


def train_step(state: TrainState, batch: dict, *, apply, loss_fn: LossFn, optimizer,
               grad_accum: int, schedule) -> tuple[TrainState, dict]:
  rng, key = jax.random.split(state.rng)
  loss, grads, aux = _grads(apply, loss_fn, state.params, batch, key, grad_accum)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step),
             **aux}
  return TrainState(state.step + 1, params, opt_state, rng), metrics


def jit_train_step(apply, loss_fn: LossFn, optimizer, cfg: TrainConfig, shardings: TrainState,
                   mesh):
  """The train step compiled once: state donated, shardings declared."""
  step = functools.partial(train_step, apply=apply, loss_fn=loss_fn, optimizer=optimizer,
                           grad_accum=cfg.grad_accum, schedule=lr_schedule(cfg))

  def step_on_mesh(state, batch):  # activations pinned to their logical-axis shardings
    with activation_mesh(mesh):
      return step(state, batch)

  return jax.jit(step_on_mesh, donate_argnums=0,
                 in_shardings=(shardings, batch_sharding(mesh, ndim=1)),
                 out_shardings=(shardings, None))
