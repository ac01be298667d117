"""Quality reward R_q (method.md §2): answer correctness + format, on final texts.

    R_q = correct_value * correct + format_value * format_ok      (default 1.0 and 0.5)

where `correct` comes from one of three sources:
- `label`: the reference answer (`task.score(...)["correct"]`); for training only.
- `vote`: agreement with the majority answer among the candidates of the same prompt
  (a pseudo-label; what the paper uses at test time). Unparseable answers never agree.
- `verifier`: the task's own label-free check (`task.verify`): a Sudoku grid is valid and
  keeps the givens, a Countdown expression uses each number once and hits the target.
`vote` and `verifier` answer different questions; report them separately.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mro.messages import quoted
from rewards.tasks import Example, Task, majority_answer

SOURCES = ("label", "vote", "verifier")


@dataclasses.dataclass(frozen=True)
class QualityConfig:
  source: str = "vote"
  correct_value: float = 1.0
  format_value: float = 0.5

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"quality source must be one of {SOURCES}, got {quoted(self.source)}")


def correctness(task: Task, examples: Sequence[Example], texts: Sequence[str],
                groups: Sequence[int], source: str) -> np.ndarray:
  """0/1 per text. `groups[i]` names the prompt text i answers (for `vote`)."""
  if len(examples) != len(texts) or len(groups) != len(texts):
    raise ValueError("examples, texts and groups must have the same length")
  if source == "label":
    return np.array([task.score(e, t)["correct"] for e, t in zip(examples, texts)], float)
  if source == "verifier":
    if not getattr(task, "has_verifier", True):
      raise ValueError(f"task {quoted(task.name)} has no label-free verifier; use 'vote' or "
                       "'label'")
    return np.array([float(task.verify(e, t)) for e, t in zip(examples, texts)])
  if source == "vote":
    answers = [task.extract_answer(t) for t in texts]
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
      by_group.setdefault(g, []).append(i)
    out = np.zeros(len(texts))
    for members in by_group.values():
      winner = majority_answer([answers[i] for i in members])
      for i in members:
        out[i] = float(winner is not None and answers[i] is not None
                       and answers[i].strip() == winner.strip())
    return out
  raise ValueError(f"quality source must be one of {SOURCES}, got {quoted(source)}")


def quality_reward(task: Task, examples: Sequence[Example], texts: Sequence[str],
                   groups: Sequence[int], cfg: QualityConfig) -> np.ndarray:
  correct = correctness(task, examples, texts, groups, cfg.source)
  style = [e.meta.get("style") for e in examples]
  fmt = np.array([float(task.format_ok(t, style=s)) for t, s in zip(texts, style)])
  return cfg.correct_value * correct + cfg.format_value * fmt
