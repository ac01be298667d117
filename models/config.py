"""Model configuration: one frozen dataclass, named presets, the special token ids (the
HF `config.json` mapping is models/hf_config.py)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from mro.messages import quoted

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Checkpoint formats (HF parameter names and config.json): LLaDA, Dream (Qwen2-style) and
# LLaDA-MoE (OLMoE-style). The network itself reads only the architecture fields below.
FAMILIES = ("llada", "dream", "lladamoe")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and numerics of the mask predictor (LLaDA, Dream and LLaDA-MoE families).

  `causal=True` gives the same network as an autoregressive LM (the perplexity
  scorer). `shift_logits=True` is the Dream-style convention (position i predicts
  token i+1); the model hides it, so callers always see "position i predicts i".
  `family` names the checkpoint format (models/checkpoints.py); the architecture is
  described by the fields alone: q/k/v biases and padding-aware RoPE positions (Dream),
  per-head q/k RMSNorm and a routed mixture of experts (LLaDA-MoE).
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
  family: str = "llada"  # checkpoint format: one of FAMILIES
  qkv_bias: bool = False  # biases on the q, k and v projections (Dream)
  qk_norm: bool = False  # RMSNorm over each head's q and k before RoPE (LLaDA-MoE)
  # With a padding mask, RoPE position i = the real tokens before i (Dream); otherwise
  # the column index (LLaDA: a left-padded row starts at its padding width).
  positions_skip_padding: bool = False
  # Mixture of experts (0 = a dense MLP of width mlp_hidden in every layer): a softmax
  # router picks experts_per_token of n_experts per token (weights not renormalised),
  # each a gated SiLU MLP of width expert_hidden; `dense_layers` keep the dense MLP.
  n_experts: int = 0
  experts_per_token: int = 0
  expert_hidden: int = 0
  dense_layers: tuple[int, ...] = ()

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                 "mlp_hidden", "max_seq_len", "head_dim"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"model.{name} must be an integer, got {quoted(value)}")
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                 "mlp_hidden", "max_seq_len"):
      if getattr(self, name) <= 0:
        raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
    for name in ("rope_theta", "norm_eps", "init_std"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) \
          or not math.isfinite(value) or value <= 0:
        raise ValueError(f"model.{name} must be a positive finite number, got {quoted(value)}")
    for name in ("causal", "shift_logits", "remat", "qkv_bias", "qk_norm",
                 "positions_skip_padding"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"model.{name} must be true or false, got {quoted(getattr(self, name))}")
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
        raise ValueError(f"model.{name}={quoted(getattr(self, name))}; choose one of "
                         f"{sorted(DTYPES)}")
    self._check_experts()
    self._check_family()

  def _check_experts(self):
    for name in ("n_experts", "experts_per_token", "expert_hidden"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"model.{name} must be an integer >= 0, got {quoted(value)}")
    if not isinstance(self.dense_layers, tuple) or any(
        isinstance(i, bool) or not isinstance(i, int) for i in self.dense_layers):
      raise ValueError(f"model.dense_layers must be a tuple of layer indices, got "
                       f"{quoted(self.dense_layers)}")
    if not self.n_experts:
      if self.experts_per_token or self.expert_hidden or self.dense_layers:
        raise ValueError("model.experts_per_token, model.expert_hidden and "
                         "model.dense_layers need model.n_experts > 0")
      return
    if not 1 <= self.experts_per_token <= self.n_experts:
      raise ValueError(f"model.experts_per_token={self.experts_per_token} must be in [1, "
                       f"model.n_experts={self.n_experts}]")
    if self.expert_hidden <= 0:
      raise ValueError(f"model.expert_hidden must be positive with experts, got "
                       f"{self.expert_hidden}")
    bad = [i for i in self.dense_layers if not 0 <= i < self.n_layers]
    if bad or len(set(self.dense_layers)) != len(self.dense_layers):
      raise ValueError(f"model.dense_layers={list(self.dense_layers)} must be distinct layer "
                       f"indices in [0, {self.n_layers})")

  def _check_family(self):
    """Each checkpoint format can write only some architectures (models/checkpoints.py)."""
    if self.family not in FAMILIES:
      raise ValueError(f"model.family={quoted(self.family)}; choose one of {FAMILIES}")
    want: dict[str, bool] = {}
    if self.family == "llada":
      want = {"qkv_bias": False, "qk_norm": False}
    elif self.family == "dream":
      want = {"qkv_bias": True, "shift_logits": True, "positions_skip_padding": True,
              "qk_norm": False, "causal": False}
    elif self.family == "lladamoe":
      want = {"qkv_bias": False, "shift_logits": False, "positions_skip_padding": False,
              "causal": False}
    for name, value in want.items():
      if getattr(self, name) != value:
        raise ValueError(f"model.{name}={getattr(self, name)} is not possible with "
                         f"model.family={quoted(self.family)} (its checkpoints need {value})")
    if (self.family == "lladamoe") != (self.n_experts > 0):
      raise ValueError(f"model.n_experts={self.n_experts} with model.family="
                       f"{quoted(self.family)}: experts are stored in the lladamoe format only, "
                       "and it needs them")

  def is_moe_layer(self, layer: int) -> bool:
    return self.n_experts > 0 and layer not in self.dense_layers

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.d_model // self.n_heads

  @property
  def jnp_param_dtype(self):
    return DTYPES[self.param_dtype]

  @property
  def jnp_compute_dtype(self):
    return DTYPES[self.compute_dtype]

  def _layer_params(self, layer: int, experts: int) -> int:
    """Weights of one layer, counting `experts` experts of an MoE layer."""
    d, hd = self.d_model, self.resolved_head_dim
    attn = d * self.n_heads * hd * 2 + d * self.n_kv_heads * hd * 2
    attn += (self.n_heads + 2 * self.n_kv_heads) * hd * self.qkv_bias + 2 * hd * self.qk_norm
    if self.is_moe_layer(layer):
      mlp = d * self.n_experts + experts * 3 * d * self.expert_hidden  # router + experts
    else:
      mlp = 3 * d * self.mlp_hidden
    return attn + mlp + 2 * d

  def num_params(self) -> int:
    """Parameter count from the shapes alone (matches the network exactly)."""
    layers = sum(self._layer_params(i, self.n_experts) for i in range(self.n_layers))
    return layers + 2 * self.vocab_size * self.d_model + self.d_model

  def active_params(self) -> int:
    """Weights one token uses: num_params with each MoE layer's experts_per_token experts
    (the router counts whole). Equal to num_params for dense models."""
    layers = sum(self._layer_params(i, self.experts_per_token) for i in range(self.n_layers))
    return layers + 2 * self.vocab_size * self.d_model + self.d_model

  def flops_per_token(self, seq_len: int, logits_tokens_fraction: float = 1.0) -> float:
    """Forward FLOPs per token (2 per multiply-add): matmuls at the active experts plus
    attention scores."""
    d, hd = self.d_model, self.resolved_head_dim
    attention = 2 * 2 * self.n_heads * hd * seq_len
    total = 0.0
    for i in range(self.n_layers):
      weights = self._layer_params(i, self.experts_per_token) - 2 * d
      weights -= ((self.n_heads + 2 * self.n_kv_heads) * hd * self.qkv_bias
                  + 2 * hd * self.qk_norm)  # biases and norms: no multiply-adds
      total += 2 * weights + attention
    return total + 2 * d * self.vocab_size * logits_tokens_fraction


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
    # Dream-v0-7B (Base/Instruct; Qwen2.5-7B shapes): its config.json has hidden_size 3584,
    # intermediate_size 18944, 28 layers, 28 heads, 4 KV heads, vocab 152064, rope_theta
    # 1e6, rms_norm_eps 1e-6, max_position_embeddings 131072.
    "dream_7b": ModelConfig(vocab_size=152064, d_model=3584, n_layers=28, n_heads=28,
                            n_kv_heads=4, mlp_hidden=18944, max_seq_len=131072,
                            rope_theta=1e6, norm_eps=1e-6, family="dream", qkv_bias=True,
                            shift_logits=True, positions_skip_padding=True,
                            param_dtype="bfloat16", compute_dtype="bfloat16"),
    # LLaDA-MoE-7B-A1B: hidden_size 2048, 16 layers, 16 heads (16 KV), 64 experts of
    # expert_intermediate_size 1024, top 8, dense_intermediate_size 8192 (unused: every
    # moe_layer_freq is 1), qk_layernorm, rope_theta 50000, max_position_embeddings 8192,
    # vocab 157184 (inclusionAI's tokenizer, shared with LLaDA2). 7.4B weights, 1.7B active.
    "llada_moe_7b": ModelConfig(vocab_size=157184, d_model=2048, n_layers=16, n_heads=16,
                                n_kv_heads=16, mlp_hidden=8192, max_seq_len=8192,
                                rope_theta=50000.0, family="lladamoe", qk_norm=True,
                                n_experts=64, experts_per_token=8, expert_hidden=1024,
                                param_dtype="bfloat16", compute_dtype="bfloat16"),
    # The tiny test model in the other two families' architectures.
    "tiny_dream": ModelConfig(vocab_size=512, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
                              mlp_hidden=384, max_seq_len=256, rope_theta=1e6, norm_eps=1e-6,
                              family="dream", qkv_bias=True, shift_logits=True,
                              positions_skip_padding=True),
    "tiny_lladamoe": ModelConfig(vocab_size=512, d_model=128, n_layers=4, n_heads=4,
                                 n_kv_heads=4, mlp_hidden=384, max_seq_len=256,
                                 rope_theta=50000.0, family="lladamoe", qk_norm=True,
                                 n_experts=8, experts_per_token=2, expert_hidden=96,
                                 dense_layers=(0,)),
}


def check_derived_head_dim(cfg: ModelConfig, family: str) -> None:
  """Families whose config.json has no head_dim derive it as hidden_size / heads."""
  if cfg.head_dim and cfg.head_dim != cfg.d_model // cfg.n_heads:
    raise ValueError(f"model.head_dim={cfg.head_dim}: {family} checkpoints derive the head "
                     "dim as hidden_size / num_attention_heads")


def preset(name: str, **overrides: Any) -> ModelConfig:
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {quoted(name)}; choose one of {sorted(PRESETS)}")
  return replace(PRESETS[name], **overrides)


def replace(cfg: ModelConfig, **overrides: Any) -> ModelConfig:
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ValueError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
  return dataclasses.replace(cfg, **overrides)


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Token ids with a role; read from tokenizer or checkpoint files, never literals."""

  mask: int
  eos: int
  pad: int
  bos: int | None = None

  def to_dict(self) -> dict[str, int | None]:
    return dataclasses.asdict(self)
