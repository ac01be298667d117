"""`mro diagnose`: how well does each reward rank candidates by final correctness?

A search can only pick right answers its reward ranks first. For every prompt, k
candidates are sampled independently (best-of-N without selection, at the search's
temperature and group steps), each is scored after every group with R_tv (leave-one-out
re-prediction of `n_verify` positions the group committed, or `all` of them), R_ppl, and
at the end R_q (by majority vote, and by the task's label-free verifier). Each
candidate's final answer is judged against the label. For each reward (and weighted
sums), the table gives, at each group index g (the reward summed over groups 1..g, what
a selection after group g sees):

- AUROC: P(reward of a correct candidate > that of a wrong one), over all candidates;
- pairwise: the same within each prompt (pairs of its correct and wrong candidates), the
  number a search depends on;
- pick: accuracy when each prompt keeps its highest-reward candidate (ties: the first),
  beside `random` (mean accuracy) and `oracle` (some candidate is right).

Ties count one half. A reward that ranks well at early groups is what a few-step search
needs; one that ranks well only at the end helps only a final pick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from mro.evaluation.runner import build_prompts
from mro.evaluation.settings import EvalConfig
from mro.loading import resolve_model, resolve_scorer, search_runner, text_sampler
from mro.method.search.decode import decode, default_rewards
from mro.sampling.textgen import batches
from rewards.combine import RewardConfig
from rewards.quality import correctness
from rewards.tasks import get_task


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
  """P(score of a positive > score of a negative), ties one half; NaN without both."""
  s, y = np.asarray(scores, float), np.asarray(labels, bool)
  pos, neg = s[y], s[~y]
  if not len(pos) or not len(neg):
    return float("nan")
  greater = (pos[:, None] > neg[None, :]).sum()
  ties = (pos[:, None] == neg[None, :]).sum()
  return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def pairwise_accuracy(scores_BN, labels_BN) -> tuple[float, int]:
  """(share of within-prompt (correct, wrong) pairs that the score orders right, ties one
  half; number of such pairs)."""
  right, pairs = 0.0, 0
  for s, y in zip(np.asarray(scores_BN, float), np.asarray(labels_BN, bool)):
    pos, neg = s[y], s[~y]
    pairs += len(pos) * len(neg)
    right += (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
  return (float(right / pairs) if pairs else float("nan")), pairs


def pick_accuracy(scores_BN, labels_BN) -> float:
  s, y = np.asarray(scores_BN, float), np.asarray(labels_BN, bool)
  return float(y[np.arange(len(s)), np.argmax(s, axis=1)].mean())


@dataclasses.dataclass(frozen=True)
class DiagnosticConfig:
  """What `mro diagnose` measures: `eval` names the task, data, protocol, the one steps
  value, sampler options and the scorer (its `search` is best-of-n: the candidates' k,
  group steps and temperature, never selected); `n_verify` lists the R_tv variants
  ("all" = every position a group committed)."""

  eval: EvalConfig
  n_verify: tuple[int | str, ...] = (1, "all")

  def __post_init__(self):
    if self.eval.search is None or self.eval.search.method != "best-of-n":
      raise ValueError("the diagnostic samples independent candidates: its search must be "
                       "best-of-n (k, w, τ; never selected)")
    if len(self.eval.sampler_configs()) != 1:
      raise ValueError("give one steps value for the diagnostic")
    for n in self.n_verify:
      RewardConfig(use=("tv",), n_verify=n)  # the reward's own check, before any work


def collect(runner, task, examples, prompts, cfg: DiagnosticConfig) -> dict[str, np.ndarray]:
  """Candidates' rewards: arrays [B, N, G] (intra rewards per group) and [B, N] (final)."""
  (scfg,) = cfg.eval.sampler_configs()
  width = runner.sampler.encode_prompts(prompts)[0].shape[1]
  use_ppl = runner.has_scorer
  out: dict[str, list] = {}
  for n in cfg.n_verify:
    rewards = default_rewards(RewardConfig(use=("tv", "ppl"), n_verify=n),
                              has_scorer=use_ppl, has_task=False)
    for idx, real in batches(len(prompts), min(cfg.eval.batch_size, len(prompts))):
      decoded = decode(runner, [prompts[i] for i in idx], scfg, cfg.eval.search,
                       rewards=rewards, seed=cfg.eval.seed, row_ids=idx, width=width)
      results = decoded.results[:real]
      out.setdefault(f"tv@{n}", []).extend(r.r_tv for r in results)
      if n == cfg.n_verify[0]:
        out.setdefault("ppl", []).extend(r.r_ppl for r in results)
        out.setdefault("texts", []).extend(r.candidates for r in results)
  texts = out.pop("texts")
  arrays = {k: np.asarray(v, float) for k, v in out.items()}
  if not use_ppl:
    arrays.pop("ppl")
  B, N = len(texts), len(texts[0])
  flat_ex = [e for e in examples for _ in range(N)]
  flat_tx = [t for row in texts for t in row]
  groups = [b for b in range(B) for _ in range(N)]
  arrays["correct"] = correctness(task, flat_ex, flat_tx, groups, "label").reshape(B, N)
  arrays["q@vote"] = correctness(task, flat_ex, flat_tx, groups, "vote").reshape(B, N)
  if getattr(task, "has_verifier", False):
    arrays["q@verifier"] = correctness(task, flat_ex, flat_tx, groups,
                                       "verifier").reshape(B, N)
  return arrays


def reward_table(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
  """One row per (reward, group index): AUROC, pairwise accuracy, pick accuracy."""
  correct = arrays["correct"].astype(bool)
  intra = {k: v for k, v in arrays.items() if v.ndim == 3}
  final = {k: v for k, v in arrays.items() if v.ndim == 2 and k.startswith("q@")}
  G = next(iter(intra.values())).shape[2]
  tv = next(k for k in intra if k.startswith("tv@"))
  sums = {}
  if "ppl" in intra:
    sums[f"{tv}+ppl"] = intra[tv] + intra["ppl"]
  rows = []

  def add(name, group, scores):
    pair, n_pairs = pairwise_accuracy(scores, correct)
    rows.append({"reward": name, "group": group, "auroc": auroc(scores.ravel(),
                                                                correct.ravel()),
                 "pairwise": pair, "pairs": n_pairs, "pick": pick_accuracy(scores, correct)})

  for name, values in {**intra, **sums}.items():
    cumulative = np.cumsum(values, axis=2)
    for g in range(G):
      add(name, g + 1, cumulative[:, :, g])
  for name, values in final.items():
    add(name, "end", values)
    for intra_name, v in {**intra, **sums}.items():
      add(f"{intra_name}+{name}", "end", v.sum(axis=2) + values)
  return rows


def summary(arrays: dict[str, np.ndarray]) -> dict[str, float]:
  correct = arrays["correct"].astype(bool)
  return {"random": float(correct.mean()), "oracle": float(correct.any(axis=1).mean()),
          "prompts": int(correct.shape[0]), "candidates": int(correct.shape[1])}


def format_table(rows: list[dict[str, Any]], head: dict[str, float]) -> str:
  lines = [f"{head['prompts']} prompts x {head['candidates']} candidates: random pick "
           f"{head['random']:.3f}, oracle {head['oracle']:.3f}",
           "| reward | after group | AUROC | pairwise | pick |", "|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['reward']} | {r['group']} | {r['auroc']:.3f} | {r['pairwise']:.3f} "
                 f"| {r['pick']:.3f} |")
  return "\n".join(lines)


def run_diagnostic(model, cfg: DiagnosticConfig) -> tuple[list[dict[str, Any]], dict]:
  """Samples, scores and ranks; returns (table rows, summary). See the module docstring."""
  ev = cfg.eval
  task = get_task(ev.task)
  protocol = ev.resolved_protocol()
  scorer = resolve_scorer(ev.scorer, ev.task, model if isinstance(model, str) else None)
  if isinstance(model, str):
    model = resolve_model(model, ev.task)
  examples = task.examples(ev.split, path=ev.data, limit=protocol.limit, seed=ev.data_seed,
                           style=protocol.style)
  sampler = text_sampler(model)
  prompts = build_prompts(examples, sampler.tokenizer, protocol)
  arrays = collect(search_runner(sampler, scorer), task, examples, prompts, cfg)
  return reward_table(arrays), summary(arrays)
