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

`tv@answer` (with `answer_rows`) is R_tv over the whole finished answer, the search's
`final_verify`: each content position re-predicted with its interleaved share of the
answer masked, a final reward like R_q.

Subsets: the table is given for all prompts, then for each group of prompts the task
names (Sudoku: `unique` / `several` solutions), then, where some wrong candidates are
*mixed* (parts of two valid answers, `mro.evaluation.mixing`), for `right vs mixed`: the
right candidates against the mixed ones only, the question a search for puzzles with
several answers must answer (which reward tells a mixed grid from a consistent one, and
after which group).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from mro.evaluation.mixing import failure_kind
from mro.evaluation.runner import build_prompts
from mro.evaluation.settings import EvalConfig
from mro.loading import resolve_model, resolve_scorer, search_runner, text_sampler
from mro.method.search.decode import decode, default_rewards
from mro.progress import Progress
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


def pairwise_accuracy(scores_BN, labels_BN, keep_BN=None) -> tuple[float, int]:
  """(share of within-prompt (correct, wrong) pairs that the score orders right, ties one
  half; number of such pairs), over the candidates `keep_BN` marks (default: all)."""
  right, pairs = 0.0, 0
  scores_BN, labels_BN = np.asarray(scores_BN, float), np.asarray(labels_BN, bool)
  keep_BN = np.ones(labels_BN.shape, bool) if keep_BN is None else np.asarray(keep_BN, bool)
  for s, y, k in zip(scores_BN, labels_BN, keep_BN):
    pos, neg = s[y & k], s[~y & k]
    pairs += len(pos) * len(neg)
    right += (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
  return (float(right / pairs) if pairs else float("nan")), pairs


def pick_accuracy(scores_BN, labels_BN, keep_BN=None) -> float:
  """Accuracy when each prompt keeps its highest-scoring candidate among those `keep_BN`
  marks (prompts with none are left out; NaN if none is left)."""
  s, y = np.asarray(scores_BN, float), np.asarray(labels_BN, bool)
  k = np.ones(y.shape, bool) if keep_BN is None else np.asarray(keep_BN, bool)
  rows = k.any(axis=1)
  if not rows.any():
    return float("nan")
  s, y, k = s[rows], y[rows], k[rows]
  return float(y[np.arange(len(s)), np.argmax(np.where(k, s, -np.inf), axis=1)].mean())


@dataclasses.dataclass(frozen=True)
class DiagnosticConfig:
  """What `mro diagnose` measures: `eval` names the task, data, protocol, the one steps
  value, sampler options and the scorer (its `search` is best-of-n: the candidates' k,
  group steps and temperature, never selected); `n_verify` lists the R_tv variants
  ("all" = every position a group committed); `answer_rows` the rows of tv@answer."""

  eval: EvalConfig
  n_verify: tuple[int | str, ...] = (1, "all")
  answer_rows: int | str | None = "all"  # tv@answer's rows per candidate (None: off)

  def __post_init__(self):
    if self.eval.search is None or self.eval.search.method != "best-of-n":
      raise ValueError("the diagnostic samples independent candidates: its search must be "
                       "best-of-n (k, w, τ; never selected)")
    if len(self.eval.sampler_configs()) != 1:
      raise ValueError("give one steps value for the diagnostic")
    for n in self.n_verify:
      RewardConfig(use=("tv",), n_verify=n)  # the reward's own check, before any work
    if self.answer_rows is not None:  # SearchConfig's own check of final_verify
      (scfg,) = self.eval.sampler_configs()
      dataclasses.replace(self.eval.search, final_verify=self.answer_rows).resolve(scfg)


def collect(runner, task, examples, prompts, cfg: DiagnosticConfig) -> dict[str, np.ndarray]:
  """Candidates' rewards: arrays [B, N, G] (intra rewards per group) and [B, N] (final)."""
  (scfg,) = cfg.eval.sampler_configs()
  width = runner.sampler.encode_prompts(prompts)[0].shape[1]
  use_ppl = runner.has_scorer
  out: dict[str, list] = {}
  passes = len(cfg.n_verify) + (cfg.answer_rows is not None)  # decodes of every prompt
  progress = Progress(f"diagnose: {passes} passes over the prompts", passes * len(prompts),
                      unit="prompts")
  for n in cfg.n_verify:
    rewards = default_rewards(RewardConfig(use=("tv", "ppl"), n_verify=n),
                              has_scorer=use_ppl, has_task=False)
    for idx, real in batches(len(prompts), min(cfg.eval.batch_size, len(prompts))):
      decoded = decode(runner, [prompts[i] for i in idx], scfg, cfg.eval.search,
                       rewards=rewards, seed=cfg.eval.seed, row_ids=idx, width=width)
      results = decoded.results[:real]
      progress.update(real, tv=f"@{n}")
      out.setdefault(f"tv@{n}", []).extend(r.r_tv for r in results)
      if n == cfg.n_verify[0]:
        out.setdefault("ppl", []).extend(r.r_ppl for r in results)
        out.setdefault("texts", []).extend(r.candidates for r in results)
  if cfg.answer_rows is not None:  # R_tv of the whole answer: the same candidates again
    whole = dataclasses.replace(cfg.eval.search, final_verify=cfg.answer_rows)
    for idx, real in batches(len(prompts), min(cfg.eval.batch_size, len(prompts))):
      decoded = decode(runner, [prompts[i] for i in idx], scfg, whole,
                       rewards=RewardConfig(use=("tv",)), seed=cfg.eval.seed, row_ids=idx,
                       width=width)
      out.setdefault("tv@answer", []).extend([t[-1] for t in r.r_tv]
                                             for r in decoded.results[:real])
      progress.update(real, tv="@answer")
  progress.close()
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
  kinds = [failure_kind(task, e, t) for e, t in zip(flat_ex, flat_tx)]
  if any(k is not None for k in kinds):  # mixed = parts of two valid answers
    arrays["mixed"] = np.array([k is not None and k["kind"] == "mixed" for k in kinds]
                               ).reshape(B, N)
  if getattr(task, "has_verifier", False):
    arrays["q@verifier"] = correctness(task, flat_ex, flat_tx, groups,
                                       "verifier").reshape(B, N)
  return arrays


def reward_table(arrays: dict[str, np.ndarray], keep=None,
                 subset: str = "all") -> list[dict[str, Any]]:
  """One row per (reward, group index): AUROC, pairwise accuracy, pick accuracy, over the
  candidates `keep` ([B, N] bool, default all) marks, labelled `subset`."""
  correct = arrays["correct"].astype(bool)
  keep = np.ones(correct.shape, bool) if keep is None else np.asarray(keep, bool)
  intra = {k: v for k, v in arrays.items() if v.ndim == 3}
  final = {k: v for k, v in arrays.items() if v.ndim == 2 and k.startswith(("q@", "tv@"))}
  G = next(iter(intra.values())).shape[2]
  tv = next(k for k in intra if k.startswith("tv@"))
  sums = {}
  if "ppl" in intra:
    sums[f"{tv}+ppl"] = intra[tv] + intra["ppl"]
  rows = []

  def add(name, group, scores):
    pair, n_pairs = pairwise_accuracy(scores, correct, keep)
    rows.append({"subset": subset, "reward": name, "group": group,
                 "auroc": auroc(scores[keep], correct[keep]), "pairwise": pair,
                 "pairs": n_pairs, "pick": pick_accuracy(scores, correct, keep)})

  for name, values in {**intra, **sums}.items():
    cumulative = np.cumsum(values, axis=2)
    for g in range(G):
      add(name, g + 1, cumulative[:, :, g])
  for name, values in final.items():
    add(name, "end", values)
    for intra_name, v in ({**intra, **sums}.items() if name.startswith("q@") else ()):
      add(f"{intra_name}+{name}", "end", v.sum(axis=2) + values)
  return rows


def summary(arrays: dict[str, np.ndarray], keep=None) -> dict[str, float]:
  """Random and oracle pick accuracy over the candidates `keep` marks (default: all)."""
  correct = arrays["correct"].astype(bool)
  keep = np.ones(correct.shape, bool) if keep is None else np.asarray(keep, bool)
  rows = keep.any(axis=1)
  return {"random": float(correct[keep].mean()),
          "oracle": float((correct & keep)[rows].any(axis=1).mean()),
          "prompts": int(rows.sum()), "candidates": int(correct.shape[1]),
          "kept": int(keep.sum())}


def subsets(arrays: dict[str, np.ndarray], groups: list | None) -> dict[str, np.ndarray]:
  """{name: [B, N] candidates}: all; each group of prompts (`groups`: one name or None per
  prompt); `right vs mixed` (right and mixed candidates) where some are mixed."""
  correct = arrays["correct"].astype(bool)
  out = {"all": np.ones(correct.shape, bool)}
  for name in sorted({g for g in groups or () if g is not None}):
    out[name] = np.array([g == name for g in groups])[:, None] & out["all"]
  if "mixed" in arrays and arrays["mixed"].any():
    out["right vs mixed"] = correct | arrays["mixed"].astype(bool)
  return out


def format_table(rows: list[dict[str, Any]], heads: dict[str, dict[str, float]]) -> str:
  """The subsets' summaries, then one table of every (subset, reward, group) row."""
  lines = [f"{name}: {h['prompts']} prompts, {h['kept']} candidates: random pick "
           f"{h['random']:.3f}, oracle {h['oracle']:.3f}" for name, h in heads.items()]
  lines += ["| subset | reward | after group | AUROC | pairwise | pick |",
            "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['subset']} | {r['reward']} | {r['group']} | {r['auroc']:.3f} | "
                 f"{r['pairwise']:.3f} | {r['pick']:.3f} |")
  return "\n".join(lines)


def run_diagnostic(model, cfg: DiagnosticConfig) -> tuple[list[dict[str, Any]], dict]:
  """Samples, scores and ranks; returns (table rows, {subset: summary}). See the module
  docstring."""
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
  name = getattr(task, "group", None)
  parts = subsets(arrays, None if name is None else [name(e) for e in examples])
  rows = [r for subset, keep in parts.items() for r in reward_table(arrays, keep, subset)]
  return rows, {subset: summary(arrays, keep) for subset, keep in parts.items()}
