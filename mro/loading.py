"""Which model a name means, and opening it for inference.

A model is named by a path (an HF-format model directory, an Orbax model directory from
`mro convert`, or a training workdir) or by a shipped name, resolved per task:

    default          experiments/models/default/<task>/         mask predictor
    default-mro      experiments/models/default-mro/<task>/     its MRO-tuned version
    default-scorer   experiments/models/default-scorer/<task>/  causal perplexity scorer

Every verb that takes `--model` resolves it here, so `default` means the same thing in
`mro sample`, `mro eval`, `mro reject-sample` and `mro rl`. A shipped predictor's scorer
is the task's `default-scorer`. A model's own sampler settings (gen length, block,
steps) are recorded with it (`sampler.json` in a model directory, the `sampler` section
of a workdir's config) and are the defaults of `mro sample`.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from models import checkpoints
from models.config import ModelConfig, SpecialIds
from models.orbax_io import ORBAX_DIR, is_orbax_model
from models.tokenizers import load_tokenizer
from models.transformer import Transformer
from models.sharding import MeshConfig, make_mesh
from mro import config as exp_config
from mro import paths
from mro.files import digest, stamp
from mro.messages import quoted
from mro.method.search.runner import SearchRunner
from mro.sampling.sampler_file import SAMPLER_FILE, read_sampler_file
from mro.sampling.schedule import SamplerConfig
from mro.sampling.textgen import TextSampler
from mro.training.checkpointing import Checkpointer
from mro.training.step import init_state, make_optimizer
from mro.training.workdir import Workdir

MODELS_DIR = paths.MODELS
SHIPPED_MODELS = ("default", "default-mro", "default-scorer")


def is_shipped(name: str | Path | None) -> bool:
  return name is not None and str(name) in SHIPPED_MODELS


def resolve_model(name_or_path: str | Path, task: str | None) -> Path:
  """`default` / `default-mro` / `default-scorer` -> experiments/models/<name>/<task>/;
  anything else is a path that must exist."""
  if is_shipped(name_or_path):
    root = MODELS_DIR / str(name_or_path)
    have = sorted(p.parent.name for p in root.glob("*/config.json"))
    if not task:
      raise ValueError(f"--model {name_or_path} names one shipped model per task; add "
                       f"--task (one of: {', '.join(have) or 'none shipped yet'})")
    path = root / task
    if not (path / "config.json").is_file():
      raise ValueError(f"no shipped {quoted(name_or_path)} model for task {quoted(task)} "
                       f"(looked in {path}); shipped {quoted(name_or_path)} models: "
                       f"{', '.join(have) or 'none yet'}. Pass a model directory instead")
    return path
  path = Path(name_or_path).expanduser()
  if not path.exists():
    close = difflib.get_close_matches(str(name_or_path), SHIPPED_MODELS, n=1)
    raise ValueError(f"model directory {path} does not exist"
                     + (f"; did you mean {quoted(close[0])}?" if close else "")
                     + f" The shipped models are {', '.join(SHIPPED_MODELS)} (one per "
                     "--task); anything else is a model directory or a training workdir")
  return path


def resolve_scorer(scorer: str | Path | None, task: str | None,
                   model: str | Path | None = None) -> Path | None:
  """The perplexity scorer to use: `scorer` if given (`default` = the task's shipped
  scorer), else the task's shipped scorer when `model` is a shipped predictor (it was
  trained with it), else None."""
  if scorer is None:
    if not (is_shipped(model) and task):
      return None
    scorer = "default"
  if str(scorer) == "default":
    if not task:
      raise ValueError("--scorer default needs --task (the shipped scorers are per task)")
    return resolve_model("default-scorer", task)
  return resolve_model(scorer, task)


def load_inference_model(path: str | Path, mesh=None) -> tuple[Transformer, ModelConfig,
                                                               SpecialIds, Any]:
  """(model, model config, special ids, tokenizer) from a workdir or a model directory
  (HF safetensors, or Orbax from `mro convert`). `mesh` shards the weights as they are
  read (default: a model directory's on one device, a workdir's checkpoint on its
  config's mesh)."""
  path = Path(path)
  if not path.is_dir():
    raise ValueError(f"model directory {path} does not exist" if not path.exists() else
                     f"{path} is a file, not a workdir or model directory")
  wd = Workdir(path)
  if wd.model.joinpath("config.json").exists():
    return load_inference_model(wd.model, mesh)
  if wd.checkpoints.is_dir() and wd.config.exists():
    cfg = exp_config.load_resolved(wd.config)
    if mesh is None:  # the run's own mesh; with several processes (`mro eval` splits
      # the examples) each holds the whole model on its own first device
      mesh = make_mesh(cfg.mesh) if jax.process_count() == 1 else \
          make_mesh(MeshConfig(), devices=jax.local_devices()[:1])
    apply, like, _ = init_state(cfg.model, make_optimizer(cfg.train), cfg.train.seed, mesh)
    with Checkpointer(wd.checkpoints, cfg.train.keep_checkpoints) as ckpt:
      restored = ckpt.restore_latest_intact(like)
    if restored is None:
      raise ValueError(f"{wd.checkpoints} holds no checkpoint yet")
    _, state, _ = restored
    tokenizer = load_tokenizer(wd.tokenizer)
    return nnx.merge(apply.graphdef, state.params), cfg.model, tokenizer.special, tokenizer
  if not path.joinpath("config.json").exists():
    raise ValueError(f"{path} is neither a workdir nor a model directory (no config.json)")
  tokenizer = load_tokenizer(path)
  model, model_cfg, ids = checkpoints.load_model(path, mesh=mesh)
  if ids.mask != tokenizer.special.mask or ids.eos != tokenizer.special.eos:
    raise ValueError(f"{path}: config.json names mask/eos ids {ids.mask}/{ids.eos} but the "
                     f"tokenizer has {tokenizer.special.mask}/{tokenizer.special.eos}")
  return model, model_cfg, tokenizer.special, tokenizer


def model_files(path: str | Path) -> list[Path]:
  """The files that define a model's network: `config.json` and the weights (a model
  directory's safetensors or its `orbax/` tree; a workdir's exported model, else its
  newest checkpoint)."""
  path = Path(path)
  wd = Workdir(path)
  if wd.model.joinpath("config.json").exists():
    return model_files(wd.model)
  if is_orbax_model(path):
    weights = sorted(f for f in (path / ORBAX_DIR).rglob("*") if f.is_file())
  else:
    weights = sorted(path.glob("*.safetensors"))
  if not weights and wd.checkpoints.is_dir():
    steps = sorted((int(p.name), p) for p in wd.checkpoints.iterdir() if p.name.isdigit())
    weights = sorted(f for f in steps[-1][1].rglob("*") if f.is_file()) if steps else []
  config = path / "config.json"
  return ([config] if config.is_file() else []) + weights


def model_digest(path: str | Path) -> str | None:
  """sha256 of a model's content (`model_files`: names relative to the model and bytes),
  not of where it lies: the same model in another clone has the same digest, and a
  retrained one another. Read once per process while the files are unchanged (their
  sizes and modification times are the cache key). None: no model files there."""
  path = Path(path).resolve()
  if Workdir(path).model.joinpath("config.json").exists():
    return model_digest(Workdir(path).model)  # the same digest as the model directory's
  files = model_files(path)
  if not files:
    return None
  names = [str(f.relative_to(path)) for f in files]
  return _digest(path, tuple(map(tuple, stamp(path, names))))  # hashable: the cache key


@functools.lru_cache(maxsize=32)
def _digest(path: Path, stamp: tuple) -> str:
  return digest(path, [name for name, _, _ in stamp])


def text_sampler(model, mesh=None) -> TextSampler:
  """A TextSampler from a model dir or workdir, a TextSampler, or `load_inference_model`'s
  tuple."""
  if isinstance(model, TextSampler):
    return model
  net, model_cfg, _, tokenizer = model if isinstance(model, tuple) else \
      load_inference_model(model, mesh)
  return TextSampler(net, model_cfg, tokenizer, mesh=mesh)


def search_runner(sampler: TextSampler, scorer: str | Path | None = None) -> SearchRunner:
  """`sampler` bound to the causal scorer at `scorer` (a model dir, loaded once; None: no
  R_ppl): what `mro.method.search.decode.decode` runs on."""
  if scorer is None:
    return SearchRunner(sampler)
  model, _, _, tokenizer = load_inference_model(scorer)
  return SearchRunner(sampler, model, tokenizer)


def recorded_sampler_config(path: str | Path) -> SamplerConfig | None:
  """The sampler settings recorded with a model: a model directory's `sampler.json`, else
  the `sampler` section of its workdir's config (a workdir, or workdir/model); None if
  nothing is recorded."""
  path = Path(path)
  if (path / SAMPLER_FILE).is_file():
    return read_sampler_file(path / SAMPLER_FILE)
  for root in (path, path.parent):
    wd = Workdir(root)
    if wd.config.exists():
      try:
        return exp_config.load_resolved(wd.config).sampler
      except (ValueError, KeyError, TypeError):
        return None
  return None
