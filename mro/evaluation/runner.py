"""`mro eval`: a benchmark at several step counts, batched through `decode` (the plain
sampler, the MRO search, best-of-n or the verified cascade; mro/method/search/decode.py), as
configured by an `EvalConfig` (mro/evaluation/settings.py).

For each steps value the task's examples run in batches of `batch_size` (the last batch
padded with copies of a real prompt, its extra rows dropped), every prompt left-padded to
the width of the longest prompt of the run: one compile per sampler setting, whatever
the batch. Row `i`'s random stream is keyed by the example index `i`, so results do not
depend on the batch size. Each response is scored by the task (for a task that names
groups of examples, e.g. Sudoku's unique / several-solution puzzles, accuracy per group
is recorded as `groups`); the setting's record (config, metrics, timing) is appended to
`out` and every response with its score to `<out stem>.generations.jsonl`, both flushed
and fsynced per setting, so a crash keeps the settings already done.

Timing: `tokens_per_second` = generated tokens (n x gen_length, EOS padding included) /
seconds spent in the sampler, the setting's one compile included (it falls in the first
batch; `tokens_per_second_after_first_batch` leaves it out). `nfe` counts forward passes
over a batch, summed over batches (steps x batches; in threshold mode the steps taken).

A rerun with the same `out` resumes: a setting whose resolved configuration (model,
data, sampler, search, rewards, seeds) is already recorded there is not run again (its
record is returned as it was) unless `force`. The data counts by its content
(`data_sha256`, a digest of the examples as read), so a data file replaced at the same
path is run again. While it runs, an eval holds `<out>.lock` (mro/locks.py): a second
eval on the same `out` is refused at once, naming the first one's PID and host.

While a setting runs, a progress bar (on a terminal) or plain progress lines (otherwise)
show batches done, examples/s and the running accuracy. Bad input (task, protocol,
steps, limit, data file, prompt length) raises ValueError before anything is compiled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mro import hosts
from mro.evaluation.protocols import Protocol
from mro.evaluation.report import generations_path
from mro.evaluation.settings import EvalConfig
from mro import locks
from mro import paths
from mro.files import append_jsonl, make_directory, read_jsonl
from mro.loading import model_digest, resolve_model, resolve_scorer, search_runner, text_sampler
from mro.messages import quoted
from mro.method.search.decode import Decoded, decode
from mro.progress import Progress
from mro.sampling.sampler import check_lengths
from mro.sampling.schedule import SamplerConfig
from mro.sampling.textgen import batches
from rewards.combine import RewardConfig
from rewards.tasks import Example, Task, get_task


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


def _rate(tokens: int, seconds: float) -> float | None:
  return tokens / seconds if tokens and seconds > 0 else None


def _mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
  keys = sorted({k for s in scores for k in s})
  return {k: float(np.mean([s.get(k, 0.0) for s in scores])) for k in keys}


def group_accuracy(task: Task, examples, gens) -> dict[str, dict[str, float]] | None:
  """{group: {"n", "accuracy"}} over the scored generations, for a task that names an
  example's group (`task.group(example)`, e.g. Sudoku's unique / several); else None."""
  name = getattr(task, "group", None)
  if name is None:
    return None
  scores: dict[str, list[float]] = {}
  for g in gens:
    group = name(examples[g["index"]])
    if group is not None:
      scores.setdefault(group, []).append(g["score"]["correct"])
  return {k: {"n": len(v), "accuracy": float(np.mean(v))}
          for k, v in sorted(scores.items())} or None


def _decode_batch(runner, cfg: EvalConfig, scfg: SamplerConfig, rewards, task, examples,
                  prompts, idx, width) -> Decoded:
  """One padded batch through the configured decoder (row i keyed by example index i)."""
  method = cfg.cascade if cfg.cascade is not None else cfg.search
  return decode(runner, [prompts[i] for i in idx], scfg, method, rewards=rewards, task=task,
                examples=[examples[i] for i in idx], seed=cfg.seed, row_ids=idx, width=width)


def _decode_share(runner, task: Task, examples, prompts, width, scfg: SamplerConfig,
                  cfg: EvalConfig, rewards: RewardConfig | None, share: np.ndarray,
                  progress: Progress | None = None) -> dict[str, Any]:
  """Samples and scores the examples `share` (indices, this process's) at one sampler
  setting: their generations and what the metrics need of each batch."""
  style = cfg.resolved_protocol().style
  out_of = {"gens": [], "batch_seconds": [], "first_rows": 0, "nfe": 0, "row_nfe": {},
            "correction_nfe": 0, "remasked": {}, "counts": None}
  for k, (pos, real) in enumerate(batches(len(share), cfg.batch_size)):
    idx = share[pos]
    t0 = time.perf_counter()
    out = _decode_batch(runner, cfg, scfg, rewards, task, examples, prompts, idx, width)
    out_of["batch_seconds"].append(time.perf_counter() - t0)
    out_of["first_rows"] += real if k == 0 else 0
    details = out.details()
    out_of["nfe"] += out.nfe
    out_of["correction_nfe"] += out.correction_nfe
    if cfg.search is not None:  # a search's passes are the same for every prompt
      out_of["counts"] = {"nfe": out.nfe, "scorer_nfe": out.scorer_nfe}
    correct = 0.0
    for j, i in enumerate(idx[:real]):
      ex, text = examples[i], out.texts[j]
      score = task.score(ex, text)
      correct += score["correct"]
      if out.remasked:  # token correction: tokens re-masked in this prompt
        out_of["remasked"][int(i)] = out.remasked[j]
      if cfg.search is None:
        out_of["row_nfe"][int(i)] = out.prompt_nfe[j]
      out_of["gens"].append(
          {"example_id": ex.id, "index": int(i), "prompt": prompts[i], "output": text,
           "extracted_answer": task.extract_answer(text), "reference_answer": ex.answer,
           "score": score, "format_ok": task.format_ok(text, style=style),
           **({"search": details[j]} if details is not None else {})})
    if progress is not None:
      progress.update(real, correct)
  return out_of


def _merge(shares: list[dict[str, Any]]) -> dict[str, Any]:
  """The processes' `_decode_share` results as one: generations and per-row counts in
  example order, batch counts summed, the slowest process's seconds."""
  done = [s for s in shares if s["batch_seconds"]]
  in_order = lambda key: [v for _, v in sorted((i, v) for s in shares
                                               for i, v in s[key].items())]
  return {"gens": sorted((g for s in shares for g in s["gens"]), key=lambda g: g["index"]),
          "sample_seconds": max(sum(s["batch_seconds"]) for s in done),
          "first_batch_seconds": max(s["batch_seconds"][0] for s in done),
          "later_seconds": max(sum(s["batch_seconds"][1:]) for s in done),
          "first_rows": sum(s["first_rows"] for s in done),
          "batches": sum(len(s["batch_seconds"]) for s in done),
          "nfe": sum(s["nfe"] for s in done), "row_nfe": in_order("row_nfe"),
          "correction_nfe": sum(s["correction_nfe"] for s in done),
          "remasked": in_order("remasked"), "counts": done[0]["counts"]}


def _run_setting(runner, task: Task, examples, prompts, width, scfg: SamplerConfig,
                 cfg: EvalConfig, rewards: RewardConfig | None = None,
                 progress: Progress | None = None, share: np.ndarray | None = None
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """Samples and scores every example at one sampler setting: (metrics, generations).
  With several processes each decodes its `share` of the examples (default: all) and
  every process gets the merged results."""
  start = time.perf_counter()
  share = np.arange(len(examples)) if share is None else share
  m = _merge(hosts.allgather(_decode_share(runner, task, examples, prompts, width, scfg,
                                           cfg, rewards, share, progress)))
  gens, n, counts, n_batches = m["gens"], len(examples), m["counts"], m["batches"]
  scores = [g["score"] for g in gens]
  metrics = {
      "accuracy": float(np.mean([s["correct"] for s in scores])),
      "format_rate": float(np.mean([g["format_ok"] for g in gens])),
      "metrics": _mean_scores(scores),
      "seconds": time.perf_counter() - start, "sample_seconds": m["sample_seconds"],
      "first_batch_seconds": m["first_batch_seconds"],
      "tokens_per_second": _rate(n * scfg.gen_length, m["sample_seconds"]),
      "tokens_per_second_after_first_batch": _rate(
          (n - m["first_rows"]) * scfg.gen_length, m["later_seconds"]),
      # forward passes per prompt (mask predictor rows: each row's own count when the
      # sampler reports it, as adaptive rules and caches do), and batch-sized passes
      "nfe_per_prompt": (counts["nfe"] if counts is not None else
                         float(np.mean(m["row_nfe"])) if m["row_nfe"] else
                         m["nfe"] / n_batches),
      "nfe": m["nfe"], "batches": n_batches,
      # forward passes per prompt of the causal perplexity scorer (R_ppl), on top
      "scorer_nfe_per_prompt": 0 if counts is None else counts["scorer_nfe"],
      # mean steps per batch: the steps, or in threshold mode the steps actually taken
      "denoising_steps": ((m["nfe"] - m["correction_nfe"]) / n_batches
                          / (2 if scfg.cfg_scale else 1) if counts is None else scfg.steps),
  }
  groups = group_accuracy(task, examples, gens)
  if groups is not None:  # accuracy per subset the task names (Sudoku: unique / several)
    metrics["groups"] = groups
  if cfg.cascade is not None:  # how far the prompts went down the cascade
    stages = np.array([g["search"]["stages_run"] for g in gens])
    metrics["stages_run"] = [float(np.mean(stages >= s + 1)) for s in range(stages.max())]
    metrics["denoising_steps"] = None
  if m["remasked"]:  # token correction: its share of the passes, and how much it re-masked
    metrics.update(correction_nfe=m["correction_nfe"],
                   remasked_per_prompt=float(np.mean(m["remasked"])))
  return metrics, gens


def setting_key(record: dict[str, Any]) -> str:
  """A digest of everything that determines a setting's results (for resuming). The model
  and the scorer enter by their content (`model_digest`, `scorer_digest`: config and
  weights), not their paths, so a fresh clone resumes and a retrained model does not reuse
  old rows; the model's label only for a model without files (in memory). Sampler
  fields at their defaults are left out, so a sampler option added later (whose default
  keeps the old behaviour, as `schedule`) keeps the keys of results written before it; so
  do the search options added later (`_LATER_SEARCH_FIELDS`) while unset."""
  keys = ("model_digest", "model", "task", "data", "data_sha256", "split", "limit",
          "protocol", "style", "assistant_prefix", "seed", "data_seed", "sampler", "search",
          "rewards", "scorer_digest")
  fields = {k: record.get(k) for k in keys}
  if fields["model_digest"] is not None:
    fields["model"] = None  # the label (a path as typed, a shipped name) says nothing more
  if isinstance(fields["sampler"], dict):
    fields["sampler"] = {k: v for k, v in fields["sampler"].items()
                         if k not in _SAMPLER_DEFAULTS or v != _SAMPLER_DEFAULTS[k]}
  if isinstance(fields["search"], dict):
    fields["search"] = {k: v for k, v in fields["search"].items()
                        if k not in _LATER_SEARCH_FIELDS or v is not None}
  text = json.dumps(fields, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


_SAMPLER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SamplerConfig)}
_LATER_SEARCH_FIELDS = ("branch_steps", "final_verify")  # None: the search as before them


def _model_label(model, model_name):
  if isinstance(model, (str, Path)):
    return model_name or str(model)
  return model_name or "<in-memory>"


def data_digest(examples: Sequence[Example]) -> str:
  """SHA-256 of the examples as read (ids, prompts, targets, answers, task fields): what
  the data file said, so a file replaced at the same path gets another digest."""
  h = hashlib.sha256()
  for ex in examples:
    h.update(json.dumps(dataclasses.asdict(ex), sort_keys=True, default=str).encode())
    h.update(b"\n")
  return h.hexdigest()


def _open(model, cfg: EvalConfig, model_name: str | None):
  """(record fields shared by every setting, examples, prompts, sampler, rewards, scorer)."""
  protocol = cfg.resolved_protocol()
  task = get_task(cfg.task)
  label = _model_label(model, model_name)
  rewards, scorer = _rewards_and_scorer(cfg, model)
  if isinstance(model, (str, Path)):
    model = resolve_model(model, cfg.task)
  examples = task.examples(cfg.split, path=cfg.data, limit=protocol.limit, seed=cfg.data_seed,
                           style=protocol.style)
  if not examples:
    raise ValueError(f"task {quoted(cfg.task)} split {quoted(cfg.split)} has no examples"
                     + (f" in {cfg.data}" if cfg.data else ""))
  sampler = text_sampler(model)
  prompts = build_prompts(examples, sampler.tokenizer, protocol)
  width = sampler.encode_prompts(prompts)[0].shape[1]
  for scfg in cfg.sampler_configs():
    check_lengths(width, scfg, sampler.model_cfg.max_seq_len)
  base = {"model": label, "commit": paths.git_commit(),
          "model_path": paths.relative(model) if isinstance(model, Path) else None,
          "model_digest": model_digest(model) if isinstance(model, Path) else None,
          "task": cfg.task, "data": paths.relative(cfg.data),
          "data_sha256": data_digest(examples),
          "split": cfg.split, "limit": protocol.limit,
          "protocol": cfg.protocol, "style": protocol.style,
          "chat_template": protocol.style == "protocol" and uses_chat_template(
              sampler.tokenizer),
          "assistant_prefix": protocol.assistant_prefix, "seed": cfg.seed,
          "data_seed": cfg.data_seed, "batch_size": cfg.batch_size, "prompt_width": width,
          "scorer": paths.relative(scorer),
          "scorer_digest": None if scorer is None else model_digest(scorer),
          "processes": jax.process_count()}
  return base, examples, prompts, sampler, rewards, scorer


def results_lock(out: str | Path | None):
  """The lock an eval holds on its results file while it runs (none without `out`). With
  several processes process 0, the one writer, holds it for all; its refusal stops all."""
  if out is None:
    return contextlib.nullcontext()
  out = Path(out)

  def hold():
    make_directory(out.parent, "the directory of --out")
    return locks.hold(out.with_name(out.name + ".lock"), f"results file {out}",
                      other="use another --out")
  return hosts.held_by_main(hold)


def run_eval(model, cfg: EvalConfig, *, model_name: str | None = None,
             on_record: Callable[[dict[str, Any]], None] | None = None,
             progress: bool = True) -> list[dict[str, Any]]:
  """Runs `cfg` on `model` (a model dir/workdir, `default`, `default-mro`, a TextSampler
  or `load_inference_model`'s tuple); returns one record per steps value (also appended
  to cfg.out when set, holding its lock; settings already there are returned from the
  file unless cfg.force). `model_name` labels an in-memory model in the records.

  With several processes (`mro.hosts`) every one runs this: each decodes an equal run
  of the examples (on its own devices), and process 0 writes the merged records and
  generations, in example order, as one process would."""
  hosts.agree("eval setting", {"model": str(model_name or model), **{
      k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"}})
  with results_lock(cfg.out):
    return _run_eval(model, cfg, model_name, on_record, progress)


def _run_eval(model, cfg: EvalConfig, model_name: str | None,
              on_record: Callable[[dict[str, Any]], None] | None,
              progress: bool) -> list[dict[str, Any]]:
  base, examples, prompts, sampler, rewards, scorer = _open(model, cfg, model_name)
  task = get_task(cfg.task)
  run_id = hosts.broadcast(datetime.datetime.now(datetime.timezone.utc).strftime(
      "%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
  done = {} if cfg.out is None or cfg.force else hosts.on_main(
      lambda: {setting_key(r): r for r in read_jsonl(cfg.out)})
  runner = None
  records = []
  for scfg in cfg.sampler_configs():
    record = {**base, "sampler": dataclasses.asdict(scfg), "steps": scfg.steps,
              **_search_fields(cfg, scfg, rewards)}
    record["setting_key"] = setting_key(record)
    if record["setting_key"] in done:
      previous = done[record["setting_key"]]
      print(f"[eval] {cfg.task} steps={scfg.steps}: already in {cfg.out} "
            f"(setting {previous.get('setting_id')}); skipped (--force re-runs it)",
            file=sys.stderr, flush=True)
      records.append(previous)
      continue
    if runner is None:  # the scorer is loaded once, and only for a setting that runs
      runner = search_runner(sampler, scorer)
    shares = np.array_split(np.arange(len(examples)), jax.process_count())
    bar = Progress(f"{cfg.task} steps={scfg.steps}", len(shares[0])) \
        if progress and hosts.is_main() else None
    try:
      metrics, gens = _run_setting(runner, task, examples, prompts, base["prompt_width"],
                                   scfg, cfg, rewards, bar, shares[jax.process_index()])
    finally:
      if bar is not None:
        bar.close()
    setting_id = f"{run_id}-s{scfg.steps}"
    record = hosts.broadcast({  # process 0's (its timing), on every process
        "setting_id": setting_id, "timestamp": datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds"),
        **record, "n": len(examples), **metrics})
    if cfg.out is not None and hosts.is_main():
      append_jsonl(generations_path(cfg.out),
                   [{"setting_id": setting_id, "steps": scfg.steps, **g} for g in gens])
      append_jsonl(Path(cfg.out), [record])
    records.append(record)
    if on_record is not None:
      on_record(record)
  return records


def _rewards_and_scorer(cfg: EvalConfig, model) -> tuple[RewardConfig | None, Path | None]:
  """The search's rewards (`EvalConfig.resolved_rewards`: the protocol's leave R_ppl out
  when no scorer is known) and the scorer R_ppl reads (None: off or no search)."""
  if cfg.search is None:
    return None, None
  scorer = None
  if cfg.resolved_rewards().on("ppl"):
    scorer = resolve_scorer(cfg.scorer, cfg.task, model if isinstance(model, (str, Path))
                            else None)
  rewards = cfg.resolved_rewards(has_scorer=scorer is not None)
  if rewards.on("ppl") and scorer is None:
    raise ValueError("the ppl reward needs --scorer (a causal model dir or 'default'); "
                     "or drop ppl from --rewards")
  return rewards, scorer if rewards.on("ppl") else None


def _search_fields(cfg: EvalConfig, scfg: SamplerConfig,
                   rewards: RewardConfig | None) -> dict[str, Any]:
  """The record's search settings: the resolved search and its rewards (None: plain)."""
  if cfg.cascade is not None:
    return {"search": {"method": "cascade", **dataclasses.asdict(cfg.cascade),
                       "stage_samplers": [dataclasses.asdict(c)
                                          for c in cfg.cascade.resolve(scfg)]},
            "rewards": None}
  if cfg.search is None:
    return {"search": None, "rewards": None}
  search = cfg.search.resolve(scfg)
  return {"search": {"method": search.method, **dataclasses.asdict(search)},
          "rewards": {"spec": rewards.spec, **dataclasses.asdict(rewards)}}
