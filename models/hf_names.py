"""Hugging Face tensor names of each family, mapped onto paths of our nnx state.

All three families share one network (models/transformer.py); only the names differ:

  ours (nnx path)              LLaDA (model.transformer.)   Dream / LLaDA-MoE (model.)
  wte                          wte.weight                   embed_tokens.weight
  blocks.i.attn_norm.weight    blocks.i.attn_norm.weight    layers.i.input_layernorm.weight
  blocks.i.attn.q_proj         blocks.i.q_proj              layers.i.self_attn.q_proj
    (k_proj, v_proj; .bias with qkv_bias: Dream)
  blocks.i.attn.attn_out       blocks.i.attn_out            layers.i.self_attn.o_proj
  blocks.i.attn.q_norm/k_norm  -                            layers.i.self_attn.q_norm/k_norm
  blocks.i.ff_norm.weight      blocks.i.ff_norm.weight      layers.i.post_attention_layernorm
  blocks.i.ff_proj (the gate)  blocks.i.ff_proj             layers.i.mlp.gate_proj
  blocks.i.up_proj             blocks.i.up_proj             layers.i.mlp.up_proj
  blocks.i.ff_out              blocks.i.ff_out              layers.i.mlp.down_proj
  blocks.i.moe.router          -                            layers.i.mlp.gate (LLaDA-MoE)
  blocks.i.moe.gate[e]         -                            layers.i.mlp.experts.e.gate_proj
  blocks.i.moe.up[e], down[e]  -                            ... experts.e.up_proj, down_proj
  ln_f.weight                  ln_f.weight                  model.norm.weight
  ff_out                       ff_out.weight                lm_head.weight (no `model.`)

torch Linear weights are [out, in] and our kernels [in, out] (`transpose`). The experts of
an MoE layer are one stacked weight [n_experts, ...] here and one tensor per expert in
the checkpoint (`expert` = the index along the stacked axis).
"""

from __future__ import annotations

from typing import NamedTuple

from models.config import ModelConfig


class Slot(NamedTuple):
  path: tuple  # where the tensor lives in our nnx state
  transpose: bool  # torch [out, in] <-> our [in, out]
  expert: int | None = None  # index along the leading axis of a stacked expert weight


def hf_name_map(cfg: ModelConfig) -> dict[str, Slot]:
  """HF tensor name -> its Slot, for every weight of the model `cfg` describes."""
  if cfg.family == "llada":
    return _llada(cfg)
  return _qwen_style(cfg)


def _llada(cfg: ModelConfig) -> dict[str, Slot]:
  pre = "model.transformer."
  names = {pre + "wte.weight": Slot(("wte",), False),
           pre + "ln_f.weight": Slot(("ln_f", "weight"), False),
           pre + "ff_out.weight": Slot(("ff_out", "kernel"), True)}
  for i in range(cfg.n_layers):
    blk = f"{pre}blocks.{i}."
    names[blk + "attn_norm.weight"] = Slot(("blocks", i, "attn_norm", "weight"), False)
    names[blk + "ff_norm.weight"] = Slot(("blocks", i, "ff_norm", "weight"), False)
    for n in ("q_proj", "k_proj", "v_proj", "attn_out"):
      names[blk + f"{n}.weight"] = Slot(("blocks", i, "attn", n, "kernel"), True)
    for n in ("ff_proj", "up_proj", "ff_out"):
      names[blk + f"{n}.weight"] = Slot(("blocks", i, n, "kernel"), True)
  return names


def _qwen_style(cfg: ModelConfig) -> dict[str, Slot]:
  """Dream (Qwen2) and LLaDA-MoE (OLMoE) names."""
  names = {"model.embed_tokens.weight": Slot(("wte",), False),
           "model.norm.weight": Slot(("ln_f", "weight"), False),
           "lm_head.weight": Slot(("ff_out", "kernel"), True)}
  attn = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "o_proj": "attn_out"}
  for i in range(cfg.n_layers):
    pre, blk = f"model.layers.{i}.", ("blocks", i)
    names[pre + "input_layernorm.weight"] = Slot(blk + ("attn_norm", "weight"), False)
    names[pre + "post_attention_layernorm.weight"] = Slot(blk + ("ff_norm", "weight"), False)
    for theirs, ours in attn.items():
      names[pre + f"self_attn.{theirs}.weight"] = Slot(blk + ("attn", ours, "kernel"), True)
      if cfg.qkv_bias and theirs != "o_proj":
        names[pre + f"self_attn.{theirs}.bias"] = Slot(blk + ("attn", ours, "bias"), False)
    if cfg.qk_norm:
      for n in ("q_norm", "k_norm"):
        names[pre + f"self_attn.{n}.weight"] = Slot(blk + ("attn", n, "weight"), False)
    if cfg.is_moe_layer(i):
      names[pre + "mlp.gate.weight"] = Slot(blk + ("moe", "router"), True)
      for theirs, ours in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
        for e in range(cfg.n_experts):  # one stacked weight's experts together
          names[pre + f"mlp.experts.{e}.{theirs}.weight"] = Slot(blk + ("moe", ours), True, e)
    else:
      for theirs, ours in (("gate_proj", "ff_proj"), ("up_proj", "up_proj"),
                           ("down_proj", "ff_out")):
        names[pre + f"mlp.{theirs}.weight"] = Slot(blk + (ours, "kernel"), True)
  return names
