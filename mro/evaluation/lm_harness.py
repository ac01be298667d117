"""lm-evaluation-harness on our models: the `mro` LM, backed by the compiled sampler.

Importing this module registers the model `mro` with lm-eval (the optional extra
`pip install -e .[lm-eval]`); `mro lm-eval ...` (`main`) hands the command line over to
lm-eval's own CLI with `--model mro` added. docs/lm_eval.md has the commands and
what each model arg does (mro/evaluation/harness_settings.py checks them).

- `generate_until`: requests are sorted by prompt length (longest first) and run in
  batches of `batch_size` through one TextSampler: the plain compiled sampler, the MRO
  search / best-of-N, or the verified cascade. Each batch is left-padded to a multiple of
  16 columns (a few compiles, not one per batch), the last batch padded with copies of
  its first prompt; request i's random stream is keyed by i, so its text does not
  depend on the order or the batching. Texts are cut at the first EOS (always) and then
  at the earliest of the request's `until` strings; answers come back in request order.
  The sampler's settings come from the model args: gen_kwargs other than `until`
  (max_gen_toks, temperature, do_sample) are not used, and a warning says so once.
- `loglikelihood`: the masked-diffusion Monte-Carlo bound (mro/evaluation/likelihood.py),
  `mc_num` samples per request in batches of `mc_batch_size` sequences; `is_greedy` is
  computed by greedy decoding with `check_greedy=true`, else False.
- `loglikelihood_rolling` raises `RollingLoglikelihoodUnsupported`.
- `--apply_chat_template` renders the model tokenizer's own chat template (offline); a
  model without one refuses it.
Each call logs its requests, seconds and forward passes (NFE) on lm-eval's logger, and
`get_model_info` adds the resolved settings and these counts to lm-eval's results.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from models.sharding import check_batch_divides, make_mesh, parse_mesh, place_params
from mro.evaluation import harness_settings
from mro.evaluation.likelihood import (WIDTH_MULTIPLE, encode_pair, greedy_matches,
                                       mc_loglikelihood, round_up)
from mro.evaluation.runner import uses_chat_template
from mro.loading import load_inference_model, search_runner
from mro.messages import quoted
from mro.method.search.decode import decode
from mro.method.search.runner import SearchRunner
from mro.sampling.sampler import left_pad
from mro.sampling.textgen import TextSampler
from rewards.tasks import get_task

logger = logging.getLogger("lm_eval.models.mro")  # shown by lm-eval's own log handler
USED_GEN_KWARGS = ("until",)


class RollingLoglikelihoodUnsupported(NotImplementedError):
  """lm-eval's loglikelihood_rolling (perplexity tasks) is not offered by the mro model."""


class HarnessSampler(TextSampler):
  """A TextSampler whose prompts may start with BOS (`add_bos`), for every mode: the
  search and the cascade encode their prompts through `encode_prompts` too."""

  def __init__(self, model, model_cfg, tokenizer, mesh=None, add_bos: bool = False):
    super().__init__(model, model_cfg, tokenizer, mesh=mesh)
    self.add_bos = add_bos
    if add_bos and tokenizer.special.bos is None:
      raise ValueError("model_args add_bos=true, but the model's tokenizer has no BOS token")

  def encode(self, text: str) -> list[int]:
    ids = self.tokenizer.encode(text) if text else []
    bos = self.tokenizer.special.bos
    return [bos] + ids if self.add_bos and ids[:1] != [bos] else ids

  def encode_prompts(self, prompts, width=None):
    rows = [self.encode(p) for p in prompts]
    for p, r in zip(prompts, rows):
      if not r:
        raise ValueError(f"prompt {quoted(p)} encodes to no tokens")
    tokens, mask = left_pad(rows, self.tokenizer.special.pad)
    extra = 0 if width is None else width - tokens.shape[1]
    if extra < 0:
      raise ValueError(f"a prompt has {tokens.shape[1]} tokens, more than width={width}")
    return (np.pad(tokens, ((0, 0), (extra, 0)), constant_values=self.tokenizer.special.pad),
            np.pad(mask, ((0, 0), (extra, 0))))


def stop_sequences(gen_kwargs: Any) -> list[str]:
  """The request's `until` strings (lm-eval passes a str or a list)."""
  until = (gen_kwargs or {}).get("until") if isinstance(gen_kwargs, dict) else None
  if until is None:
    return []
  return [until] if isinstance(until, str) else [u for u in until if u]


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
  """`text` up to the earliest occurrence of any stop string."""
  ends = [i for i in (text.find(s) for s in stops) if i >= 0]
  return text[:min(ends)] if ends else text


def length_sorted_batches(lengths: Sequence[int], batch_size: int):
  """(request indices, real count) per batch, longest requests first; the last batch is
  padded with copies of its first index (rows to drop)."""
  order = np.argsort(-np.asarray(lengths), kind="stable")
  out = []
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    out.append((np.concatenate([idx, np.full(batch_size - len(idx), idx[0])]), len(idx)))
  return out


@register_model("mro")
class MROLM(LM):
  """The `mro` model of lm-evaluation-harness (see the module docstring)."""

  def __init__(self, batch_size=None, max_batch_size=None, device=None, **model_args):
    super().__init__()
    del max_batch_size  # batches have a fixed size: one compile per shape
    self.settings = harness_settings.resolve(model_args, batch_size)
    if device not in (None, "", "cpu") and not str(device).startswith("cuda"):
      logger.info("device=%s is not used: JAX places the model (JAX_PLATFORMS)", device)
    mesh = None
    if self.settings.mesh:
      mesh = make_mesh(parse_mesh(self.settings.mesh))
    net, model_cfg, _, tokenizer = load_inference_model(self.settings.model_path, mesh)
    self.sampler = HarnessSampler(net, model_cfg, tokenizer, mesh=mesh,
                                  add_bos=self.settings.add_bos)
    if mesh is not None:
      for name in ("batch_size", "mc_batch_size"):
        try:
          check_batch_divides(getattr(self.settings, name), mesh)
        except ValueError as e:
          raise ValueError(f"model_args {name}: {e}") from None
      self.sampler.params = place_params(self.sampler.params, mesh)
    self._runner: SearchRunner | None = None
    self._warned_gen_kwargs = False
    self.stats: dict[str, dict[str, float]] = {}
    logger.info("mro model %s: sampler %s, search %s", self.settings.model_path,
                self.settings.sampler, self.settings.search)

  @classmethod
  def create_from_arg_obj(cls, arg_dict, additional_config=None):
    """lm-eval's own options (batch_size, device, ...) under the model args: a model arg
    named like one of them wins instead of clashing."""
    extra = {k: v for k, v in (additional_config or {}).items()
             if v is not None and k not in arg_dict}
    return cls(**arg_dict, **extra)

  @classmethod
  def create_from_arg_string(cls, arg_string, additional_config=None):
    return cls.create_from_arg_obj(lm_eval_utils.simple_parse_args_string(arg_string),
                                   additional_config)

  # --- chat template -----------------------------------------------------------------

  @property
  def tokenizer_name(self) -> str:
    return str(self.settings.model_path)

  def chat_template(self, chat_template=False) -> str | None:
    return getattr(self.sampler.tokenizer, "chat_template", None) or ""

  def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
    if not uses_chat_template(self.sampler.tokenizer):
      raise ValueError(f"--apply_chat_template: the model {self.settings.model_path} has no "
                       "chat template (tokenizer_config.json chat_template); drop the flag")
    return self.sampler.tokenizer.apply_chat_template(
        [dict(m) for m in chat_history], add_generation_prompt=add_generation_prompt)

  # --- generation ----------------------------------------------------------------------

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    if not requests:
      return []
    contexts = [r.args[0] for r in requests]
    gen_kwargs = [r.args[1] if len(r.args) > 1 else {} for r in requests]
    self._warn_unused(gen_kwargs)
    start = time.perf_counter()
    texts, nfe = self.generate_texts(contexts)
    seconds = time.perf_counter() - start
    out = [cut_at_stops(t, stop_sequences(kw)) for t, kw in zip(texts, gen_kwargs)]
    for req, text in zip(requests, out):
      self.cache_hook.add_partial("generate_until", req.args, text)
    cfg = self.settings.sampler
    self._record("generate_until", requests=len(requests), seconds=seconds,
                 nfe_per_prompt=nfe, tokens_per_second=len(requests) * cfg.gen_length / seconds)
    logger.info("generate_until: %d requests in %.1f s (%.1f requests/s), %.1f forward "
                "passes per prompt (gen_length %d, steps %d, search %s)", len(requests),
                seconds, len(requests) / seconds, nfe, cfg.gen_length, cfg.steps,
                self.settings.search)
    return out

  def generate_texts(self, contexts: Sequence[str]) -> tuple[list[str], float]:
    """(the decoded response of every context, in order; mean forward passes per
    prompt). Length-sorted batches; see the module docstring."""
    s, sampler = self.settings, self.sampler
    lengths = [len(sampler.encode(c)) for c in contexts]
    limit = sampler.model_cfg.max_seq_len - s.sampler.gen_length
    for i, n in enumerate(lengths):
      if n > limit or n == 0:
        raise ValueError(f"request {i}: a prompt of {n} tokens does not fit: it needs 1 to "
                         f"max_seq_len {sampler.model_cfg.max_seq_len} - gen_length "
                         f"{s.sampler.gen_length} = {limit} tokens (fewer shots or a "
                         "shorter gen_length)")
    texts: list[str] = [""] * len(contexts)
    passes = np.zeros(len(contexts))
    for idx, real in length_sorted_batches(lengths, s.batch_size):
      width = round_up(max(lengths[i] for i in idx), WIDTH_MULTIPLE, limit)
      batch, row_nfe = self._run_batch([contexts[i] for i in idx], idx, width)
      for j, i in enumerate(idx[:real]):
        texts[i], passes[i] = batch[j], row_nfe[j]
    return texts, float(passes.mean())

  def _run_batch(self, prompts, idx, width) -> tuple[list[str], list[float]]:
    """(texts, forward passes per row) of one padded batch, in the batch's order: through
    the one decoder interface (`decode`), plain, search / best-of-n or cascade."""
    s = self.settings
    method = s.cascade if s.cascade is not None else s.search_cfg
    out = decode(self.runner(), prompts, s.sampler, method, rewards=s.rewards,
                 task=get_task(s.task) if s.task else None,
                 seed=s.seed, row_ids=idx, width=width)
    return out.texts, list(out.prompt_nfe) or [out.nfe] * len(prompts)

  def runner(self) -> SearchRunner:
    """The sampler bound to the perplexity scorer of the search (loaded once)."""
    if self._runner is None:
      self._runner = search_runner(self.sampler, self.settings.scorer_path)
    return self._runner

  def _warn_unused(self, gen_kwargs) -> None:
    unused = sorted({k for kw in gen_kwargs if isinstance(kw, dict) for k in kw}
                    - set(USED_GEN_KWARGS))
    if unused and not self._warned_gen_kwargs:
      self._warned_gen_kwargs = True
      logger.warning("gen_kwargs %s are not used: the sampler's settings come from "
                     "model_args (gen_length=%d, steps=%d, temperature=%g)", unused,
                     self.settings.sampler.gen_length, self.settings.sampler.steps,
                     self.settings.sampler.temperature)

  # --- likelihood ----------------------------------------------------------------------

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    if not requests:
      return []
    s, sampler = self.settings, self.sampler
    start = time.perf_counter()
    pairs = []
    for context, continuation in (r.args for r in requests):
      ctx, cont = encode_pair(sampler.tokenizer, context, continuation)
      pairs.append((sampler.encode(context.rstrip(" ")) if s.add_bos else ctx, cont))
    estimates = mc_loglikelihood(
        sampler.apply, sampler.params, pairs, mask_id=sampler.tokenizer.special.mask,
        pad_id=sampler.tokenizer.special.pad, max_seq_len=sampler.model_cfg.max_seq_len,
        mc_num=s.mc_num, batch_size=s.mc_batch_size, seed=s.seed,
        cfg_scale=s.sampler.cfg_scale, mesh=sampler.mesh)
    greedy = (greedy_matches(sampler, pairs, remasking=s.sampler.remasking,
                             cfg_scale=s.sampler.cfg_scale, batch_size=s.batch_size)
              if s.check_greedy else [False] * len(pairs))
    out = [(e.logprob, g) for e, g in zip(estimates, greedy)]
    for req, res in zip(requests, out):
      self.cache_hook.add_partial("loglikelihood", req.args, res)
    seconds = time.perf_counter() - start
    rows = s.mc_num * sum(1 for _, cont in pairs if cont)
    self._record("loglikelihood", requests=len(requests), seconds=seconds,
                 nfe_rows=rows, mean_stderr=float(np.mean([e.stderr for e in estimates])))
    logger.info("loglikelihood: %d requests in %.1f s, %d sequences (mc_num %d, %d per "
                "pass), mean Monte-Carlo standard error %.3f nats", len(requests), seconds,
                rows, s.mc_num, s.mc_batch_size, np.mean([e.stderr for e in estimates]))
    return out

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
    raise RollingLoglikelihoodUnsupported(
        "loglikelihood_rolling (perplexity tasks such as wikitext) is not offered by the mro "
        "model: a masked diffusion model bounds the likelihood of a continuation given its "
        "context (loglikelihood, multiple-choice tasks) but has no rolling per-token "
        "likelihood; use generate_until or loglikelihood tasks")

  # --- bookkeeping ---------------------------------------------------------------------

  def _record(self, kind: str, **counts) -> None:
    total = self.stats.setdefault(kind, {})
    for k, v in counts.items():
      if k in ("requests", "seconds", "nfe_rows"):
        total[k] = total.get(k, 0) + v
      else:
        total[k] = v  # the last call's value

  def get_model_info(self) -> dict[str, Any]:
    s = self.settings
    return {"mro_model": str(s.model_path), "mro_sampler": dataclasses.asdict(s.sampler),
            "mro_search": s.search,
            "mro_search_settings": (dataclasses.asdict(s.search_cfg) if s.search_cfg else
                                    dataclasses.asdict(s.cascade) if s.cascade else None),
            "mro_mc_num": s.mc_num, "mro_stats": self.stats}


def main(argv: Sequence[str]) -> int:
  """`mro lm-eval ARGS`: lm-eval's own CLI with `--model mro` unless another is named."""
  from lm_eval.__main__ import cli_evaluate  # lm-eval's CLI (the optional extra), on use
  argv = list(argv)
  if argv[:1] in (["-h"], ["--help"]):
    print(harness_settings.describe() + "\n\nlm-eval's own options follow (mro lm-eval "
          "adds --model mro):\n")
  head = argv[:1] if argv[:1] == ["run"] else []
  rest = argv[len(head):]
  if argv[:1] not in (["ls"], ["validate"]) and not any(
      a in ("--model", "-M") or a.startswith("--model=") for a in rest):
    rest = ["--model", "mro", *rest]
  saved = sys.argv
  sys.argv = ["mro lm-eval", *head, *rest]
  try:
    cli_evaluate()
  finally:
    sys.argv = saved
  return 0
