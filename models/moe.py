"""A routed mixture of gated-SiLU experts (LLaDA-MoE's sparse MLP).

Router: logits = x @ router (no bias), softmax over the experts in float32, the top
`experts_per_token` probabilities kept as they are (not renormalised to sum to one, as
LLaDA-MoE's reference does), every other expert's weight zero. Each expert e is
`down_e(silu(gate_e(x)) * up_e(x))`; the output is the weighted sum over experts.

The experts are three stacked weights [n_experts, ...] (logical axis `expert`, which
models/sharding.py maps onto the mesh), applied to every token as one batched einsum:
exact, with static shapes, and an expert-split mesh gives each device its own experts
(their weighted outputs are summed across devices). The price is that every expert runs
on every token, n_experts / experts_per_token times the FLOPs of the active experts (8x
for LLaDA-MoE-7B-A1B); `ModelConfig.flops_per_token` counts the active experts only, and
`mro plan` reports both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import ModelConfig


def routing_weights(logits_BLE, k: int):
  """float32 [B, L, E]: the softmax probability of each token's top-k experts, 0 elsewhere
  (no renormalisation)."""
  probs = jax.nn.softmax(logits_BLE.astype(jnp.float32), axis=-1)
  top, idx = jax.lax.top_k(probs, k)
  picked = jax.nn.one_hot(idx, probs.shape[-1], dtype=jnp.float32)  # [B, L, k, E]
  return jnp.einsum("blk,blke->ble", top, picked)


class MoE(nnx.Module):
  """[B, L, D] -> [B, L, D]: the routed experts of one layer."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    d, h, E = cfg.d_model, cfg.expert_hidden, cfg.n_experts
    dtype, std = cfg.jnp_param_dtype, cfg.init_std
    normal = lambda shape: (std * jax.random.normal(rngs.params(), shape)).astype(dtype)
    self.router = nnx.Param(normal((d, E)), logical_axes=("embed", "expert"))
    self.gate = nnx.Param(normal((E, d, h)), logical_axes=("expert", "embed", "mlp"))
    self.up = nnx.Param(normal((E, d, h)), logical_axes=("expert", "embed", "mlp"))
    self.down = nnx.Param(normal((E, h, d)), logical_axes=("expert", "mlp", "embed"))
    self.top_k, self.dtype = cfg.experts_per_token, cfg.jnp_compute_dtype

  def __call__(self, x_BLD):
    x = x_BLD.astype(self.dtype)
    w = lambda p: p[...].astype(self.dtype)
    weights = routing_weights(jnp.einsum("bld,de->ble", x, w(self.router)), self.top_k)
    hidden = (jax.nn.silu(jnp.einsum("bld,edh->bleh", x, w(self.gate)))
              * jnp.einsum("bld,edh->bleh", x, w(self.up)))
    # the routing weight folds into the down projection: no [B, L, E, D] intermediate
    hidden = hidden * weights.astype(self.dtype)[..., None]
    return jnp.einsum("bleh,ehd->bld", hidden, w(self.down))
