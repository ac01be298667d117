"""Model configuration: one frozen dataclass, named presets, HF `config.json` mapping."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and numerics of the LLaDA-family Transformer.

  `causal=True` gives the same network as an autoregressive LM (the perplexity
  scorer). `shift_logits=True` is the Dream-style convention (position i predicts
  token i+1); the model hides it, so callers always see "position i predicts i".
  """

  vocab_size: int = 512
  d_model: int = 128
  n_layers: int = 4
  n_heads: int = 4
  n_kv_heads: int = 4
  head_dim: int = 0  # 0 = d_model // n_heads
  mlp_hidden: int = 384
  max_seq_len: int = 256
  rope_theta: float = 500000.0
  norm_eps: float = 1e-5
  causal: bool = False
  shift_logits: bool = False
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  remat: bool = False  # gradient checkpointing per layer
  init_std: float = 0.02

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                 "mlp_hidden", "max_seq_len", "head_dim"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"model.{name} must be an integer, got {value!r}")
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                 "mlp_hidden", "max_seq_len"):
      if getattr(self, name) <= 0:
        raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
    for name in ("rope_theta", "norm_eps", "init_std"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) \
          or not math.isfinite(value) or value <= 0:
        raise ValueError(f"model.{name} must be a positive finite number, got {value!r}")
    for name in ("causal", "shift_logits", "remat"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"model.{name} must be true or false, got {getattr(self, name)!r}")
    if self.head_dim < 0:
      raise ValueError(f"model.head_dim must be >= 0, got {self.head_dim}")
    if self.head_dim == 0 and self.d_model % self.n_heads:
      raise ValueError(
          f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads};"
          " set model.head_dim explicitly")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads={self.n_kv_heads}")
    if self.resolved_head_dim % 2:
      raise ValueError(f"head dim {self.resolved_head_dim} must be even for RoPE")
    for name in ("param_dtype", "compute_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"model.{name}={getattr(self, name)!r}; choose one of {sorted(DTYPES)}")

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.d_model // self.n_heads

  @property
  def jnp_param_dtype(self):
    return DTYPES[self.param_dtype]

  @property
  def jnp_compute_dtype(self):
    return DTYPES[self.compute_dtype]

  def num_params(self) -> int:
    """Parameter count from the shapes alone (matches the network exactly)."""
    d, hd = self.d_model, self.resolved_head_dim
    attn = d * self.n_heads * hd * 2 + d * self.n_kv_heads * hd * 2
    mlp = 3 * d * self.mlp_hidden
    return self.n_layers * (attn + mlp + 2 * d) + 2 * self.vocab_size * d + d

  def flops_per_token(self, seq_len: int, logits_tokens_fraction: float = 1.0) -> float:
    """Forward FLOPs per token (2 per multiply-add): matmuls plus attention scores."""
    d, hd = self.d_model, self.resolved_head_dim
    per_layer = 2 * (d * self.n_heads * hd * 2 + d * self.n_kv_heads * hd * 2
                     + 3 * d * self.mlp_hidden)
    attention = 2 * 2 * self.n_heads * hd * seq_len
    head = 2 * d * self.vocab_size * logits_tokens_fraction
    return self.n_layers * (per_layer + attention) + head


PRESETS: dict[str, ModelConfig] = {
    # ~1.0M parameters with a 512-token vocabulary: the test model.
    "tiny": ModelConfig(vocab_size=512, d_model=128, n_layers=4, n_heads=4, n_kv_heads=4,
                        mlp_hidden=384, max_seq_len=256),
    # ~8.9M parameters with a 4096-token vocabulary.
    "small": ModelConfig(vocab_size=4096, d_model=256, n_layers=8, n_heads=8, n_kv_heads=8,
                         mlp_hidden=768, max_seq_len=512),
    # LLaDA-8B (Base/Instruct) shapes.
    "llada_8b": ModelConfig(vocab_size=126464, d_model=4096, n_layers=32, n_heads=32,
                            n_kv_heads=32, mlp_hidden=12288, max_seq_len=4096,
                            rope_theta=500000.0, param_dtype="bfloat16",
                            compute_dtype="bfloat16"),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
  return replace(PRESETS[name], **overrides)


def replace(cfg: ModelConfig, **overrides: Any) -> ModelConfig:
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ValueError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
  return dataclasses.replace(cfg, **overrides)


# --- Hugging Face LLaDA config.json -------------------------------------------------

# HF fields whose values our network does not implement. A config that sets them
# differently is refused rather than silently mis-read.
_HF_REQUIRED = {
    "block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms",
    "rope": True, "alibi": False, "weight_tying": False, "include_bias": False,
    "include_qkv_bias": False, "scale_logits": False, "attention_layer_norm": False,
    "input_emb_norm": False, "bias_for_layer_norm": False,
}


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Token ids with a role; read from tokenizer or checkpoint files, never literals."""

  mask: int
  eos: int
  pad: int
  bos: int | None = None

  def to_dict(self) -> dict[str, int | None]:
    return dataclasses.asdict(self)


def from_hf_dict(hf: dict[str, Any], **overrides: Any) -> tuple[ModelConfig, SpecialIds]:
  """Maps a LLaDA `config.json` dict to our config and its special token ids."""
  for key, want in _HF_REQUIRED.items():
    if key in hf and hf[key] is not None and hf[key] != want:
      raise ValueError(f"config.json: {key}={hf[key]!r} is not supported (need {want!r})")
  missing = [k for k in ("d_model", "n_layers", "n_heads", "mlp_hidden_size") if k not in hf]
  if missing:
    raise ValueError(f"config.json lacks required LLaDA field(s) {missing}")
  vocab = hf.get("embedding_size") or hf["vocab_size"]
  d_model, n_heads = hf["d_model"], hf["n_heads"]
  fields = dict(
      vocab_size=vocab, d_model=d_model, n_layers=hf["n_layers"], n_heads=n_heads,
      n_kv_heads=hf.get("n_kv_heads") or n_heads, head_dim=hf.get("head_dim") or 0,
      mlp_hidden=hf["mlp_hidden_size"], max_seq_len=hf.get("max_sequence_length", 4096),
      rope_theta=hf.get("rope_theta", 10000.0), norm_eps=hf.get("rms_norm_eps", 1e-5),
      causal=bool(hf.get("causal", False)), shift_logits=bool(hf.get("shift_logits", False)),
  )
  if hf.get("torch_dtype") in DTYPES:
    fields["param_dtype"] = hf["torch_dtype"]
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ValueError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
  fields.update(overrides)
  if "mask_token_id" not in hf or "eos_token_id" not in hf:
    raise ValueError("config.json must name mask_token_id and eos_token_id")
  cfg = ModelConfig(**fields)
  for key in ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
    value = hf.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not 0 <= value < cfg.vocab_size):
      raise ValueError(f"config.json: {key}={value!r} must be a token id in "
                       f"[0, {cfg.vocab_size})")
  pad = hf.get("pad_token_id")
  ids = SpecialIds(mask=hf["mask_token_id"], eos=hf["eos_token_id"],
                   pad=hf["eos_token_id"] if pad is None else pad,
                   bos=hf.get("bos_token_id"))
  return cfg, ids


def to_hf_dict(cfg: ModelConfig, ids: SpecialIds) -> dict[str, Any]:
  """The inverse of `from_hf_dict`: a config.json other LLaDA tools can read."""
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
