"""Tiny random models and the tiny MRO experiment the tests build: random weights, a
sentencepiece tokenizer trained on the tasks' texts, everything in seconds. The fixtures
that hold them (conftest.py) build each once per session."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from models.checkpoints import save_hf
from models.config import preset
from models.tokenizers import train_sentencepiece
from models.transformer import init_model
from mro import config as exp_config
from rewards.tasks import get_task
from rewards.tasks.formats import COMPACT_TAGS

SHAPES = dict(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=64, max_seq_len=64)
# The eval of the random model (conftest.eval_run): 7 arith problems in batches of 3 (the
# last one padded), 16 tokens, 3 step counts.
# `mro eval` on the tiny_run workdir: 5 arith problems, 32 tokens, steps L/4 and L/8.
CLI_EVAL_ARGS = ("--task", "arith", "--limit", "5", "--gen-length", "32", "--steps", "L/4,L/8",
                 "--batch-size", "4")
EVAL_BASE = dict(task="arith", steps="L,L/4,2", limit=7, gen_length=16, batch_size=3,
                 temperature=1.0, seed=3)


def save_random_model(directory, max_seq_len: int = 96):
  """A randomly initialised tiny model in HF format with a sentencepiece tokenizer."""
  texts = [t for name in ("arith", "sudoku", "countdown")
           for ex in get_task(name).examples("train", limit=100) for t in (ex.prompt, ex.target)]
  tok = train_sentencepiece(texts, directory, 64, user_symbols=COMPACT_TAGS,
                            byte_fallback=False, hard_vocab_limit=False)
  cfg = preset("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2,
               n_kv_heads=2, mlp_hidden=64, max_seq_len=max_seq_len)
  save_hf(directory, nnx.state(init_model(cfg, seed=0)), cfg, tok.special)
  return directory


def save_start_models(root: Path) -> dict[str, Path]:
  """A random tiny mask predictor and causal scorer sharing a Sudoku tokenizer."""
  examples = get_task("sudoku").examples("train", limit=300)
  tok = train_sentencepiece([t for e in examples for t in (e.prompt, e.target)], root / "tok",
                            64, user_symbols=("<answer>", "</answer>"), byte_fallback=False,
                            hard_vocab_limit=False)
  dirs = {}
  for name, causal in (("mdm", False), ("scorer", True)):
    cfg = preset("tiny", vocab_size=tok.vocab_size, causal=causal, **SHAPES)
    save_hf(root / name, nnx.split(init_model(cfg, seed=1))[1], cfg, tok.special)
    tok.save(root / name)
    dirs[name] = root / name
  return dirs


def mro_config(start_models, rewards=None, **sections) -> exp_config.ExperimentConfig:
  """The tiny MRO experiment; `sections` are {section: {key: value}} overrides."""
  raw = {"data": {"task": "sudoku", "train_size": 8, "max_prompt_len": 20,
                  "max_response_len": 24},
         "sampler": {"gen_length": 24, "steps": 4, "block_length": 24},
         "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2,
                   "log_every": 1, "progress": False, "lr": 1e-3},
         "start": {"model": str(start_models["mdm"]), "scorer": str(start_models["scorer"])},
         "search": {"k": 2, "group_steps": 2, "temperature": 0.25},
         "rl": {"group_steps": 2, "rollouts_per_prompt": 2, "prompts_per_batch": 2,
                "inner_steps": 2},
         "validation": {"every": 2, "limit": 4}}
  if rewards is not None:
    raw["rewards"] = {"use": rewards}
  for section, values in sections.items():
    raw[section] = {**raw.get(section, {}), **values}
  return exp_config.from_dict(raw)


def mro_cli_sets(start_models) -> list[str]:
  """The tiny settings of `mro_config()` as --set flags on top of the shipped mro_sudoku."""
  flat = {"data.path": "null", "data.train_size": 8, "sampler.steps": 4,
          "train.steps": 4, "train.batch_size": 4, "train.warmup_steps": 1,
          "train.checkpoint_every": 2, "train.progress": "false",
          "start.model": start_models["mdm"], "start.scorer": start_models["scorer"],
          "search.group_steps": 2, "search.k": 2, "rl.group_steps": 2,
          "validation.every": 2, "validation.limit": 4, "validation.data": "null",
          "rl.rollouts_per_prompt": 2, "rl.prompts_per_batch": 2}
  return [arg for k, v in flat.items() for arg in ("--set", f"{k}={v}")]
