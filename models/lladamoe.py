"""LLaDA-MoE (LLaDA-MoE-7B-A1B, OLMoE-style) checkpoints: config.json <-> ModelConfig.

A LLaDA-MoE model is our network with per-head q/k RMSNorm and a routed mixture of
experts (models/moe.py) in every layer whose `moe_layer_freq` entry is 1 (a dense MLP of
`dense_intermediate_size` where it is 0). It decodes with LLaDA's own sampler and
padding convention (RoPE positions are column indices). Its HF parameter names are in
models/hf_names.py.

The reference code ignores some config fields: `norm_topk_prob` (the router never
renormalises its top-k weights), `routed_scaling_factor`, `router_num_group`,
`router_topk_group` and `router_aux_loss_coef` (training only). They are ignored here
too. Fields whose other values would change the network are refused.
"""

from __future__ import annotations

from typing import Any

from models.config import ModelConfig, SpecialIds, check_derived_head_dim
from mro.messages import quoted

MODEL_TYPE = "lladamoe"
_REQUIRED = {"hidden_act": "silu", "tie_word_embeddings": False, "rope_scaling": None,
             "attention_bias": False, "clip_qkv": None, "moe_router_enable_expert_bias": None,
             "shared_expert_intermediate_size": None, "partial_rotary_factor": 1.0}
_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
           "num_experts", "num_experts_per_tok", "expert_intermediate_size", "moe_layer_freq")


def _check(hf: dict[str, Any]) -> None:
  for key, want in _REQUIRED.items():
    value = hf.get(key, want)
    if value != want and not (want is None and value is False):
      raise ValueError(f"config.json: {key}={quoted(value)} is not supported (need {quoted(want)})")
  score = hf.get("moe_router_score_function")
  if score not in (None, "softmax"):
    raise ValueError(f"config.json: moe_router_score_function={quoted(score)} is not supported "
                     "(need 'softmax')")
  missing = [k for k in _FIELDS if k not in hf]
  if missing:
    raise ValueError(f"config.json lacks required LLaDA-MoE field(s) {missing}")
  freq = hf["moe_layer_freq"]
  if (not isinstance(freq, list) or len(freq) != hf["num_hidden_layers"]
      or any(f not in (0, 1) or isinstance(f, bool) for f in freq)):
    raise ValueError(f"config.json: moe_layer_freq={quoted(freq)} must list 0 (dense) or 1 (MoE) "
                     f"for each of the {hf['num_hidden_layers']} layers")
  if 0 in freq and not hf.get("dense_intermediate_size"):
    raise ValueError("config.json: moe_layer_freq has dense layers (0) but "
                     "dense_intermediate_size is not set")


def config_fields(hf: dict[str, Any]) -> dict[str, Any]:
  """ModelConfig fields of a LLaDA-MoE `config.json`."""
  _check(hf)
  heads = hf["num_attention_heads"]
  dense = tuple(i for i, f in enumerate(hf["moe_layer_freq"]) if f == 0)
  return dict(
      family="lladamoe", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
      n_layers=hf["num_hidden_layers"], n_heads=heads,
      n_kv_heads=hf.get("num_key_value_heads") or heads,
      # the dense MLP's width (a dense layer's, if any; else unused by the network)
      mlp_hidden=hf.get("dense_intermediate_size") or hf["expert_intermediate_size"],
      max_seq_len=hf.get("max_position_embeddings", 4096),
      rope_theta=hf.get("rope_theta", 10000.0), norm_eps=hf.get("rms_norm_eps", 1e-5),
      qk_norm=bool(hf.get("qk_layernorm")), n_experts=hf["num_experts"],
      experts_per_token=hf["num_experts_per_tok"],
      expert_hidden=hf["expert_intermediate_size"], dense_layers=dense,
  )


def to_hf_dict(cfg: ModelConfig, ids: SpecialIds) -> dict[str, Any]:
  """A LLaDA-MoE `config.json` (the keys LLaDAMoEConfig reads)."""
  check_derived_head_dim(cfg, "LLaDA-MoE")
  return dict(
      _REQUIRED, architectures=["LLaDAMoEModelLM"], model_type=MODEL_TYPE,
      hidden_size=cfg.d_model, dense_intermediate_size=cfg.mlp_hidden,
      expert_intermediate_size=cfg.expert_hidden, num_hidden_layers=cfg.n_layers,
      num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
      vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_seq_len,
      rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps, qk_layernorm=cfg.qk_norm,
      num_experts=cfg.n_experts, num_experts_per_tok=cfg.experts_per_token,
      moe_layer_freq=[0 if i in cfg.dense_layers else 1 for i in range(cfg.n_layers)],
      moe_router_score_function="softmax", norm_topk_prob=None, attention_dropout=0.0,
      mask_token_id=ids.mask, eos_token_id=ids.eos, pad_token_id=ids.pad,
      bos_token_id=ids.bos, torch_dtype=cfg.param_dtype, use_cache=False,
  )
