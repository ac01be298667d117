"""`mro eval`: a benchmark at several step counts, batched through the compiled sampler.

For each steps value the task's examples run in batches of `batch_size` (the last batch
padded with copies of a real prompt, its extra rows dropped), every prompt left-padded to
the width of the longest prompt of the run: one compile per sampler setting, whatever
the batch. Row `i`'s random stream is keyed by the example index `i`, so results do not
depend on the batch size. Each response is scored by the task; the setting's record
(config, metrics, timing) is appended to `out` and every response with its score to
`<out stem>.generations.jsonl`, both flushed and fsynced per setting, so a crash keeps
the settings already done.

Timing: `tokens_per_second` = generated tokens (n x gen_length, EOS padding included) /
seconds spent in the sampler, the setting's one compile included (it falls in the first
batch; `tokens_per_second_after_first_batch` leaves it out). `nfe` counts forward passes
over a batch, summed over batches (steps x batches; in threshold mode the steps taken).

Steps are integers or fractions of the response length: `L` (= gen_length, one token
per step; also `full`), `L/2`, `L/4`, ... Bad input (task, protocol, steps, limit, data
file, prompt length) raises ValueError before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mro.evaluation.report import generations_path
from mro.files import append_jsonl
from mro.loading import load_inference_model, resolve_model
from mro.evaluation.protocols import Protocol, get_protocol
from mro.sampling.sampler import check_lengths
from mro.sampling.schedule import SamplerConfig
from mro.method.search import SearchConfig
from mro.method.textsearch import SEARCHES, search_settings
from rewards.combine import RewardConfig
from rewards.tasks import Example, Task, get_task

def parse_steps(text: str) -> tuple[str, ...]:
  """"2,4,L/2" -> ("2", "4", "L/2") (checked against gen_length later)."""
  items = tuple(s.strip() for s in text.split(","))
  if not all(items):
    raise ValueError(f"steps must be a comma-separated list like 2,4,8 or L,L/2; got "
                     f"{text!r}")
  return items


def resolve_steps(item: int | str, gen_length: int) -> int:
  """An integer, or `L`/`full` (= gen_length) or `L/k` (gen_length / k, exactly)."""
  if isinstance(item, int) and not isinstance(item, bool):
    return item
  text = str(item).strip()
  if text.lstrip("-").isdigit():
    return int(text)
  head, _, div = text.partition("/")
  if head not in ("L", "full") or (div and not div.isdigit()) or div == "0":
    raise ValueError(f"steps {text!r}: expected an integer, L, full or L/k (k a positive "
                     "integer)")
  k = int(div) if div else 1
  if gen_length % k:
    raise ValueError(f"steps {text!r}: gen_length {gen_length} is not divisible by {k}")
  return gen_length // k


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """One `mro eval` run. Sampler fields left None come from the protocol (per task);
  `steps` () means the protocol's steps. `seed` seeds sampling, `data_seed` the
  examples of generated tasks. `limit` None = the protocol's, else the task's default."""

  task: str
  steps: tuple[int | str, ...] | str = ()
  protocol: str = "compact"
  data: str | None = None
  split: str = "test"
  limit: int | None = None
  gen_length: int | None = None
  block_length: int | None = None
  temperature: float | None = None
  remasking: str | None = None
  threshold: float | None = None
  cfg_scale: float = 0.0
  batch_size: int = 16
  seed: int = 0
  data_seed: int = 0
  out: str | None = None
  # Test-time search (mro/method/search.py): "none", "mro" (group steps + selection) or
  # "best-of-n" (k independent samples, picked with the same rewards at equal NFE).
  search: str = "none"
  k: int = 4
  group_steps: int | None = None  # default: a quarter of the steps (4 search points)
  select: str = "argmax"
  search_temperature: float = 0.25
  resample_temperature: float = 1.0
  n_live: int = 1
  rewards: str = "tv,ppl,q"
  quality_source: str = "vote"
  n_verify: int = 1
  forward_chunks: int | None = None  # candidate forward passes in slices (None: auto)
  scorer: str | None = None  # causal scorer dir, or "default" (experiments/models/default-scorer)

  def __post_init__(self):
    if isinstance(self.steps, str):
      object.__setattr__(self, "steps", parse_steps(self.steps))
    else:
      object.__setattr__(self, "steps", tuple(self.steps))
    get_task(self.task)  # ValueError listing the known tasks
    get_protocol(self.protocol)  # ValueError listing the known protocols
    if self.split not in ("train", "validation", "test"):
      raise ValueError(f"split must be train, validation or test, got {self.split!r}")
    if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
      raise ValueError(f"limit must be a positive number of examples, got {self.limit}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {self.batch_size}")
    if self.out is not None and Path(self.out).is_dir():
      raise ValueError(f"out={self.out} is a directory; give a .jsonl file path")
    self.sampler_configs()  # steps, lengths, temperature, threshold: all checked now
    if self.search not in SEARCHES:
      raise ValueError(f"search must be one of {SEARCHES}, got {self.search!r}")
    if self.search != "none":
      for scfg in self.sampler_configs():
        self.search_settings(scfg)
      if self.search_settings(scfg)[1].on("ppl") and self.scorer is None:
        raise ValueError("the ppl reward needs --scorer (a causal model dir or 'default')")

  def search_settings(self, scfg: SamplerConfig) -> tuple[SearchConfig, RewardConfig]:
    return search_settings(scfg, **{f: getattr(self, f) for f in _SEARCH_FIELDS[:-1]})

  def resolved_protocol(self) -> Protocol:
    """The protocol for this task with the explicit options applied."""
    p = get_protocol(self.protocol, self.task)
    overrides = {"gen_length": self.gen_length, "block_length": self.block_length,
                 "temperature": self.temperature, "remasking": self.remasking,
                 "limit": self.limit}
    p = dataclasses.replace(p, **{k: v for k, v in overrides.items() if v is not None})
    return p

  def sampler_configs(self) -> tuple[SamplerConfig, ...]:
    """One SamplerConfig per steps value (SamplerConfig checks that each divides)."""
    p = self.resolved_protocol()
    items = self.steps or (p.steps_for(p.gen_length),)
    steps = [resolve_steps(s, p.gen_length) for s in items]
    if len(set(steps)) != len(steps):
      raise ValueError(f"steps {list(items)} name the same number of steps twice: {steps}")
    if self.threshold is not None and len(steps) > 1:
      raise ValueError("with threshold set the number of steps adapts per row; give at most "
                       f"one steps value (got {list(items)})")
    return tuple(SamplerConfig(gen_length=p.gen_length, steps=s,
                               block_length=p.block_length or p.gen_length,
                               temperature=p.temperature, remasking=p.remasking,
                               threshold=self.threshold, cfg_scale=self.cfg_scale)
                 for s in steps)


def build_prompts(examples: Sequence[Example], tokenizer, protocol: Protocol) -> list[str]:
  """The text the model is given: protocol-style prompts go through the tokenizer's chat
  template (one user message + assistant header) when it has one; then the protocol's
  assistant prefix (d1: "<reasoning>")."""
  templated = protocol.style == "protocol" and uses_chat_template(tokenizer)
  out = []
  for ex in examples:
    text = ex.prompt
    if templated:
      text = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                           add_generation_prompt=True)
    out.append(text + protocol.assistant_prefix)
  return out


def uses_chat_template(tokenizer) -> bool:
  return (hasattr(tokenizer, "apply_chat_template")
          and getattr(tokenizer, "chat_template", None) is not None)


def batches(n: int, batch_size: int) -> list[tuple[np.ndarray, int]]:
  """(example indices, number of real rows) per batch; the last batch is padded to
  batch_size with copies of its first index (rows to drop)."""
  out = []
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    out.append((np.concatenate([idx, np.full(batch_size - len(idx), idx[0])]), len(idx)))
  return out


def _text_sampler(model):
  """A TextSampler from a model dir, a TextSampler, or `load_inference_model`'s tuple."""
  from mro.sampling.textgen import TextSampler
  if isinstance(model, TextSampler):
    return model
  net, model_cfg, _, tokenizer = model if isinstance(model, tuple) else \
      load_inference_model(model)
  return TextSampler(net, model_cfg, tokenizer)


_SEARCH_FIELDS = ("search", "k", "group_steps", "select", "search_temperature",
                  "resample_temperature", "n_live", "rewards", "quality_source", "n_verify",
                  "forward_chunks", "scorer")


def _searcher(sampler, cfg: EvalConfig):
  """A SearchRunner with the scorer the config names (loaded once per run)."""
  from mro.method.textsearch import SearchRunner
  if cfg.scorer is None:
    return SearchRunner(sampler)
  path = resolve_model("default-scorer" if cfg.scorer == "default" else cfg.scorer, cfg.task)
  scorer, _, _, scorer_tok = load_inference_model(path)
  return SearchRunner(sampler, scorer, scorer_tok)


def _rate(tokens: int, seconds: float) -> float | None:
  return tokens / seconds if tokens and seconds > 0 else None


def _mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
  keys = sorted({k for s in scores for k in s})
  return {k: float(np.mean([s.get(k, 0.0) for s in scores])) for k in keys}


def _run_setting(sampler, task: Task, examples, prompts, width, scfg: SamplerConfig,
                 cfg: EvalConfig, searcher=None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Samples and scores every example at one sampler setting: (metrics, generations)."""
  start = time.perf_counter()
  texts: list[str | None] = [None] * len(examples)
  details: list[dict | None] = [None] * len(examples)
  batch_seconds, nfe, nfe_per_prompt, scorer_nfe = [], 0, scfg.steps, 0
  for idx, real in batches(len(examples), cfg.batch_size):
    t0 = time.perf_counter()
    if searcher is not None:
      results, counts = searcher.search(
          [prompts[i] for i in idx], scfg, *cfg.search_settings(scfg),
          task=task, examples=[examples[i] for i in idx], seed=cfg.seed, row_ids=idx,
          width=width)
      batch_seconds.append(time.perf_counter() - t0)
      nfe_per_prompt, scorer_nfe = counts["nfe"], counts["scorer_nfe"]
      nfe += counts["nfe"]  # batch-sized forward passes (a pool row = 1/N of one)
      for i, r in zip(idx[:real], results[:real]):
        texts[i] = r.text
        details[i] = {"total_reward": r.total, "candidate_totals": r.totals,
                      "candidate_r_q": r.r_q, "candidate_r_tv": r.r_tv,
                      "candidate_r_ppl": r.r_ppl}
      continue
    out, prompt_len = sampler.generate_tokens([prompts[i] for i in idx], scfg, seed=cfg.seed,
                                              row_ids=idx, width=width)
    batch_seconds.append(time.perf_counter() - t0)
    nfe += int(out.nfe)
    for i, gen in zip(idx[:real], sampler.decode(out, prompt_len)[:real]):
      texts[i] = gen.text
  style = cfg.resolved_protocol().style
  gens, scores, fmt = [], [], []
  for i, (ex, text) in enumerate(zip(examples, texts)):
    score = task.score(ex, text)
    ok = task.format_ok(text, style=style)
    scores.append(score)
    fmt.append(float(ok))
    gens.append({"example_id": ex.id, "index": i, "prompt": prompts[i], "output": text,
                 "extracted_answer": task.extract_answer(text), "reference_answer": ex.answer,
                 "score": score, "format_ok": ok,
                 **({"search": details[i]} if details[i] is not None else {})})
  sample_seconds, n_batches = sum(batch_seconds), len(batch_seconds)
  later = sum(batch_seconds[1:])  # the first batch includes this setting's compile
  metrics = {
      "accuracy": float(np.mean([s["correct"] for s in scores])),
      "format_rate": float(np.mean(fmt)), "metrics": _mean_scores(scores),
      "seconds": time.perf_counter() - start, "sample_seconds": sample_seconds,
      "first_batch_seconds": batch_seconds[0],
      "tokens_per_second": _rate(len(examples) * scfg.gen_length, sample_seconds),
      "tokens_per_second_after_first_batch": _rate(
          (len(examples) - min(cfg.batch_size, len(examples))) * scfg.gen_length, later),
      # forward passes per prompt (mask predictor rows), and batch-sized passes in total
      "nfe_per_prompt": nfe / n_batches if searcher is None else nfe_per_prompt,
      "nfe": nfe, "batches": n_batches,
      # forward passes per prompt of the causal perplexity scorer (R_ppl), on top
      "scorer_nfe_per_prompt": scorer_nfe,
      # mean steps per batch: the steps, or in threshold mode the steps actually taken
      "denoising_steps": (nfe / n_batches / (2 if scfg.cfg_scale else 1) if searcher is None
                          else scfg.steps),
  }
  return metrics, gens


def run_eval(model, cfg: EvalConfig, *, model_name: str | None = None,
             on_record: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
  """Runs `cfg` on `model` (a model dir/workdir, `default`, `default-mro`, a TextSampler
  or `load_inference_model`'s tuple); returns one record per steps value (also appended
  to cfg.out when set). `model_name` labels an in-memory model in the records."""
  settings = cfg.sampler_configs()
  protocol = cfg.resolved_protocol()
  task = get_task(cfg.task)
  if isinstance(model, (str, Path)):
    model_name = model_name or str(model)
    model = resolve_model(model, cfg.task)
  elif model_name is None:
    model_name = "<in-memory>"
  examples = task.examples(cfg.split, path=cfg.data, limit=protocol.limit, seed=cfg.data_seed,
                           style=protocol.style)
  if not examples:
    raise ValueError(f"task {cfg.task!r} split {cfg.split!r} has no examples"
                     + (f" in {cfg.data}" if cfg.data else ""))
  sampler = _text_sampler(model)
  prompts = build_prompts(examples, sampler.tokenizer, protocol)
  width = sampler.encode_prompts(prompts)[0].shape[1]
  for scfg in settings:
    check_lengths(width, scfg, sampler.model_cfg.max_seq_len)
  run_id = (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
            + "-" + uuid.uuid4().hex[:6])
  base = {"model": model_name,
          "model_path": str(model.resolve()) if isinstance(model, Path) else None,
          "task": cfg.task, "data": cfg.data, "split": cfg.split, "limit": protocol.limit,
          "protocol": cfg.protocol, "style": protocol.style,
          "chat_template": protocol.style == "protocol" and uses_chat_template(
              sampler.tokenizer),
          "assistant_prefix": protocol.assistant_prefix, "seed": cfg.seed,
          "data_seed": cfg.data_seed, "batch_size": cfg.batch_size, "prompt_width": width}
  records = []
  searcher = _searcher(sampler, cfg) if cfg.search != "none" else None
  if searcher is not None:
    base["search"] = {f: getattr(cfg, f) for f in _SEARCH_FIELDS}
  for scfg in settings:
    metrics, gens = _run_setting(sampler, task, examples, prompts, width, scfg, cfg, searcher)
    if searcher is not None:
      metrics["search_config"] = dataclasses.asdict(cfg.search_settings(scfg)[0])
    setting_id = f"{run_id}-s{scfg.steps}"
    record = {"setting_id": setting_id,
              "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"),
              **base, "sampler": dataclasses.asdict(scfg), "steps": scfg.steps,
              "n": len(examples), **metrics}
    if cfg.out is not None:
      append_jsonl(generations_path(cfg.out),
                   [{"setting_id": setting_id, "steps": scfg.steps, **g} for g in gens])
      append_jsonl(Path(cfg.out), [record])
    records.append(record)
    if on_record is not None:
      on_record(record)
  return records
