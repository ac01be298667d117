"""Hugging Face `config.json` <-> (ModelConfig, SpecialIds), for every family: LLaDA's
mapping is here, Dream's and LLaDA-MoE's in models/dream.py and models/lladamoe.py,
dispatched on the file's `model_type` (reading) or the config's `family` (writing)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from models import dream, lladamoe
from models.config import DTYPES, ModelConfig, SpecialIds
from mro.messages import quoted

# HF fields whose values our network does not implement. A config that sets them
# differently is refused rather than silently mis-read.
_HF_REQUIRED = {
    "block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms",
    "rope": True, "alibi": False, "weight_tying": False, "include_bias": False,
    "include_qkv_bias": False, "scale_logits": False, "attention_layer_norm": False,
    "input_emb_norm": False, "bias_for_layer_norm": False,
}


def from_hf_dict(hf: dict[str, Any], **overrides: Any) -> tuple[ModelConfig, SpecialIds]:
  """Maps a `config.json` dict (LLaDA, Dream or LLaDA-MoE, by its `model_type`) to our
  config and its special token ids."""
  model_type = hf.get("model_type", "llada")
  if model_type == "llada":
    fields = llada_fields(hf)
  elif model_type == dream.MODEL_TYPE:
    fields = dream.config_fields(hf)
  elif model_type == lladamoe.MODEL_TYPE:
    fields = lladamoe.config_fields(hf)
  else:
    raise ValueError(f"config.json: model_type {quoted(model_type)} is not supported; known: "
                     "llada, Dream, lladamoe")
  return build_config(hf, fields, overrides)


def llada_fields(hf: dict[str, Any]) -> dict[str, Any]:
  """ModelConfig fields of a LLaDA `config.json`."""
  for key, want in _HF_REQUIRED.items():
    if key in hf and hf[key] is not None and hf[key] != want:
      raise ValueError(f"config.json: {key}={quoted(hf[key])} is not supported "
                       f"(need {quoted(want)})")
  missing = [k for k in ("d_model", "n_layers", "n_heads", "mlp_hidden_size") if k not in hf]
  if missing:
    raise ValueError(f"config.json lacks required LLaDA field(s) {missing}")
  n_heads = hf["n_heads"]
  return dict(
      vocab_size=hf.get("embedding_size") or hf["vocab_size"], d_model=hf["d_model"],
      n_layers=hf["n_layers"], n_heads=n_heads, n_kv_heads=hf.get("n_kv_heads") or n_heads,
      head_dim=hf.get("head_dim") or 0, mlp_hidden=hf["mlp_hidden_size"],
      max_seq_len=hf.get("max_sequence_length", 4096),
      rope_theta=hf.get("rope_theta", 10000.0), norm_eps=hf.get("rms_norm_eps", 1e-5),
      causal=bool(hf.get("causal", False)), shift_logits=bool(hf.get("shift_logits", False)),
      positions_skip_padding=bool(hf.get("positions_skip_padding", False)),
  )


def build_config(hf: dict[str, Any], fields: dict[str, Any],
                 overrides: dict[str, Any]) -> tuple[ModelConfig, SpecialIds]:
  """The config from a family's `fields` (+ the stored dtype and `overrides`) and the
  special ids of `config.json`."""
  dtype = hf.get("torch_dtype", hf.get("dtype"))
  if dtype in DTYPES:
    fields["param_dtype"] = dtype
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ValueError(f"unknown model config key(s) {quoted(unknown)}; known keys: "
                     f"{sorted(known)}")
  fields.update(overrides)
  if "mask_token_id" not in hf or "eos_token_id" not in hf:
    raise ValueError("config.json must name mask_token_id and eos_token_id")
  cfg = ModelConfig(**fields)
  for key in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
    value = hf.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 0 <= value < cfg.vocab_size):
      raise ValueError(f"config.json: {key}={quoted(value)} must be a token id in "
                       f"[0, {cfg.vocab_size})")
  pad = hf.get("pad_token_id")
  ids = SpecialIds(mask=hf["mask_token_id"], eos=hf["eos_token_id"],
                   pad=hf["eos_token_id"] if pad is None else pad,
                   bos=hf.get("bos_token_id"))
  return cfg, ids


def to_hf_dict(cfg: ModelConfig, ids: SpecialIds) -> dict[str, Any]:
  """The inverse of `from_hf_dict`: a config.json the family's own tools can read."""
  if cfg.family == "dream":
    return dream.to_hf_dict(cfg, ids)
  if cfg.family == "lladamoe":
    return lladamoe.to_hf_dict(cfg, ids)
  hf = dict(_HF_REQUIRED)
  hf.update(
      model_type="llada", architectures=["LLaDAModelLM"], d_model=cfg.d_model,
      n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
      mlp_hidden_size=cfg.mlp_hidden, vocab_size=cfg.vocab_size, embedding_size=cfg.vocab_size,
      max_sequence_length=cfg.max_seq_len, rope_theta=cfg.rope_theta,
      rms_norm_eps=cfg.norm_eps, layer_norm_with_affine=True, rope_full_precision=True,
      mask_token_id=ids.mask, eos_token_id=ids.eos, pad_token_id=ids.pad,
      bos_token_id=ids.bos, causal=cfg.causal, shift_logits=cfg.shift_logits,
      torch_dtype=cfg.param_dtype,
  )
  if cfg.positions_skip_padding:
    hf["positions_skip_padding"] = True
  if cfg.head_dim:
    hf["head_dim"] = cfg.head_dim
  return hf


def load_hf_config(model_dir: str | Path, **overrides: Any) -> tuple[ModelConfig, SpecialIds]:
  path = Path(model_dir) / "config.json"
  if not path.is_file():
    raise ValueError(f"{path} does not exist")
  try:
    hf = json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e
  if not isinstance(hf, dict):
    raise ValueError(f"{path} must hold a JSON object, got {type(hf).__name__}")
  try:
    return from_hf_dict(hf, **overrides)
  except (ValueError, TypeError) as e:
    raise ValueError(f"{path}: {e}") from e
