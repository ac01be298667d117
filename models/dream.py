"""Dream (Dream-v0-7B, Qwen2-style) checkpoints: config.json <-> ModelConfig.

A Dream model is our network with q/k/v biases, grouped KV heads, shifted logits (the
output at position i predicts token i + 1; the network hides the shift) and its padding
convention: with left padding, RoPE positions count real tokens only (a row's first real
token is position 0), as Dream's own `diffusion_generate` builds them. Its HF parameter
names are in models/hf_names.py; its sampler (timestep schedule, maskgit_plus /
topk_margin / entropy confidence) is a set of SamplerConfig options
(mro/sampling/schedule.py).
"""

from __future__ import annotations

from typing import Any

from models.config import ModelConfig, SpecialIds, check_derived_head_dim
from mro.messages import quoted

MODEL_TYPE = "Dream"
# config.json fields whose other values this network does not implement: refused rather
# than silently mis-read.
_REQUIRED = {"hidden_act": "silu", "tie_word_embeddings": False, "rope_scaling": None,
             "use_sliding_window": False}
_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
           "vocab_size")


def config_fields(hf: dict[str, Any]) -> dict[str, Any]:
  """ModelConfig fields of a Dream `config.json`."""
  for key, want in _REQUIRED.items():
    if key in hf and hf[key] != want:
      raise ValueError(f"config.json: {key}={quoted(hf[key])} is not supported "
                       f"(need {quoted(want)})")
  missing = [k for k in _FIELDS if k not in hf]
  if missing:
    raise ValueError(f"config.json lacks required Dream field(s) {missing}")
  heads = hf["num_attention_heads"]
  return dict(
      family="dream", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
      n_layers=hf["num_hidden_layers"], n_heads=heads,
      n_kv_heads=hf.get("num_key_value_heads") or heads, mlp_hidden=hf["intermediate_size"],
      max_seq_len=hf.get("max_position_embeddings", 32768),
      rope_theta=hf.get("rope_theta", 10000.0), norm_eps=hf.get("rms_norm_eps", 1e-6),
      qkv_bias=True, shift_logits=True, positions_skip_padding=True,
  )


def to_hf_dict(cfg: ModelConfig, ids: SpecialIds) -> dict[str, Any]:
  """A Dream `config.json` (the keys Dream's own DreamConfig reads)."""
  check_derived_head_dim(cfg, "Dream")
  return dict(
      _REQUIRED, architectures=["DreamModel"], model_type=MODEL_TYPE,
      hidden_size=cfg.d_model, intermediate_size=cfg.mlp_hidden,
      num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
      num_key_value_heads=cfg.n_kv_heads, vocab_size=cfg.vocab_size,
      max_position_embeddings=cfg.max_seq_len, rope_theta=cfg.rope_theta,
      rms_norm_eps=cfg.norm_eps, attention_dropout=0.0, sliding_window=None,
      mask_token_id=ids.mask, eos_token_id=ids.eos, pad_token_id=ids.pad,
      bos_token_id=ids.bos, torch_dtype=cfg.param_dtype, use_cache=False,
  )
