"""The reward diagnostic (`mro diagnose`): its ranking metrics on hand-built cases, and one
end-to-end run on the shipped Sudoku model."""

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest

from mro import cli
from mro.evaluation import diagnostic as D
from rewards.tasks import get_task
from rewards.tasks.sudoku import solutions

DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"


def test_auroc_counts_ordered_pairs_and_half_of_the_ties():
  assert D.auroc([3, 2, 1, 0], [True, True, False, False]) == 1.0
  assert D.auroc([0, 1, 2, 3], [True, True, False, False]) == 0.0
  # positives 2, 1 vs negatives 1, 0: pairs (2>1, 2>0, 1=1 tie, 1>0) = 3.5 / 4
  assert D.auroc([2, 1, 1, 0], [True, True, False, False]) == 0.875
  assert math.isnan(D.auroc([1, 2], [True, True]))


def test_pairwise_accuracy_compares_candidates_of_the_same_prompt_only():
  scores = np.array([[5.0, 1.0, 0.0], [0.0, 9.0, 9.0]])
  labels = np.array([[True, False, True], [True, False, False]])
  # prompt 0: (5 vs 1) right, (0 vs 1) wrong; prompt 1: (0 vs 9) twice wrong -> 1 of 4
  assert D.pairwise_accuracy(scores, labels) == (0.25, 4)
  # pooled over prompts every correct one is also compared with the other prompt's: 1 of 9
  assert D.auroc(scores.ravel(), labels.ravel()) == pytest.approx(1 / 9)


def test_pick_accuracy_keeps_each_prompts_highest_reward_candidate():
  scores = np.array([[1.0, 2.0], [3.0, 3.0]])
  labels = np.array([[False, True], [False, True]])
  assert D.pick_accuracy(scores, labels) == 0.5  # ties go to the first candidate


def test_the_table_sums_rewards_over_groups_before_ranking():
  correct = np.array([[True, False]])
  tv = np.array([[[0.0, 1.0], [1.0, -5.0]]])  # candidate 0 loses group 1, wins overall
  rows = D.reward_table({"correct": correct, "tv@1": tv})
  by_group = {r["group"]: r for r in rows if r["reward"] == "tv@1"}
  assert by_group[1]["pairwise"] == 0.0 and by_group[2]["pairwise"] == 1.0


@pytest.mark.integration  # the shipped models
def test_diagnose_runs_on_the_shipped_model_and_prints_every_reward(capsys, tmp_path):
  """On puzzles of the d1 kind (two with several solutions, two unique): every reward,
  R_tv of the whole answer, and the table for all prompts and each group of them."""
  from rewards.tasks.sudoku import read_csv
  rows = [read_csv(DATA / "sudoku_test_8blanks_any.csv")[i] for i in (6, 7, 0, 1)]
  data = tmp_path / "p.csv"
  data.write_text("Puzzle,Solution\n" + "".join(f"{p},{s}\n" for p, s in rows))
  out = tmp_path / "diag.jsonl"
  code = cli.main(["diagnose", "--task", "sudoku", "--data", str(data), "--limit", "4",
                   "--steps", "6", "--k", "3", "--group-steps", "3", "--out", str(out)])
  text, err = capsys.readouterr()
  assert code == 0
  # progress over the three decodes of the 4 prompts (n-verify 1, all; the answer rows)
  assert "[diagnose: 3 passes over the prompts] 12/12 prompts" in err, err
  for reward in ("tv@1", "tv@all", "ppl", "q@vote", "q@verifier", "tv@1+ppl", "tv@answer"):
    for subset in ("all", "several", "unique"):
      assert f"| {subset} | {reward} |" in text
  assert "several: 2 prompts, 6 candidates" in text
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  assert len(lines) == text.count("\n| ") - 1
  assert {(r["subset"], r["prompts"]) for r in lines} >= {("all", 4), ("several", 2),
                                                           ("unique", 2)}
  with pytest.raises(ValueError, match="n_verify"):
    D.DiagnosticConfig(D.EvalConfig.build("sudoku", search="best-of-n", steps="6"),
                       n_verify=(0,))
  with pytest.raises(ValueError, match="final_verify=99 rows"):
    D.DiagnosticConfig(D.EvalConfig.build("sudoku", search="best-of-n", steps="6"),
                       answer_rows=99)


def test_a_bad_n_verify_list_is_one_named_error_before_any_work(capsys):
  assert cli.main(["diagnose", "--task", "sudoku", "--steps", "6", "--n-verify", "1,al"]) == 2
  err = capsys.readouterr().err
  assert "--n-verify: expected a positive integer or 'all', got 'al'" in err
  assert "Traceback" not in err


def test_metrics_count_only_the_kept_candidates():
  scores = np.array([[5.0, 9.0, 1.0], [0.0, 2.0, 1.0]])
  labels = np.array([[True, False, False], [False, True, False]])
  keep = np.array([[True, False, True], [False, False, False]])
  assert D.pairwise_accuracy(scores, labels, keep) == (1.0, 1)  # 9 is left out
  assert D.pick_accuracy(scores, labels, keep) == 1.0  # prompt 1 has none kept: left out
  assert D.pick_accuracy(scores, labels) == 0.5
  rows = D.reward_table({"correct": labels, "tv@1": scores[:, :, None]}, keep, "mine")
  assert rows[0] == {"subset": "mine", "reward": "tv@1", "group": 1, "auroc": 1.0,
                     "pairwise": 1.0, "pairs": 1, "pick": 1.0}
  head = D.summary({"correct": labels}, keep)
  assert (head["prompts"], head["kept"], head["random"], head["oracle"]) == (1, 2, 0.5, 1.0)


def test_subsets_are_all_each_group_and_right_vs_mixed():
  correct = np.array([[True, False], [False, False], [True, True]])
  mixed = np.array([[False, True], [True, False], [False, False]])
  parts = D.subsets({"correct": correct, "mixed": mixed}, ["several", "several", "unique"])
  assert list(parts) == ["all", "several", "unique", "right vs mixed"]
  np.testing.assert_array_equal(parts["several"], [[1, 1], [1, 1], [0, 0]])
  np.testing.assert_array_equal(parts["right vs mixed"], [[1, 1], [1, 0], [1, 1]])
  assert list(D.subsets({"correct": correct, "mixed": ~correct & False}, None)) == ["all"]


class _Runner:
  """Stands in for the search: fixed candidates, R_tv per group = 0.1 * (group + 1) (the
  last group, with final_verify, = -candidate index)."""

  has_scorer = False

  def __init__(self, texts):
    self.texts = texts
    self.sampler = types.SimpleNamespace(encode_prompts=lambda p, w=None: (
        np.zeros((len(p), 4)), None))

  def search(self, prompts, scfg, search, rewards, task, examples, seed, row_ids, width):
    G = scfg.steps // search.group_steps
    out = []
    for i in row_ids:
      tv = [[0.1 * (g + 1) for g in range(G)] for _ in self.texts[i]]
      if search.final_verify is not None:
        tv = [t[:-1] + [-float(n)] for n, t in enumerate(tv)]
      out.append(types.SimpleNamespace(r_tv=tv, r_ppl=[[0.0] * G for _ in tv],
                                       candidates=self.texts[i], text=self.texts[i][0]))
    return out, {"nfe": 0, "scorer_nfe": 0}


def test_collect_marks_mixed_candidates_and_reads_the_whole_answer_reward():
  task = get_task("sudoku")
  several = "1200340021000000"
  s = solutions(several)
  unique = task.examples("test", limit=1)[0]
  examples = [task._example("a", several, s[0], "compact"), unique]
  grids = [[s[1], s[0][:8] + s[1][8:], "1111222233334444"], [unique.answer] * 3]
  texts = [[f"<answer>{g}</answer>" for g in row] for row in grids]
  cfg = D.DiagnosticConfig(D.EvalConfig.build("sudoku", search="best-of-n", steps="6",
                                              group_steps=3, k=3, batch_size=2),
                           n_verify=(1,))
  arrays = D.collect(_Runner(texts), task, examples, ["p0", "p1"], cfg)
  np.testing.assert_array_equal(arrays["correct"], [[1, 0, 0], [1, 1, 1]])
  np.testing.assert_array_equal(arrays["mixed"], [[0, 1, 0], [0, 0, 0]])
  np.testing.assert_allclose(arrays["tv@answer"], [[0, -1, -2], [0, -1, -2]])
  np.testing.assert_allclose(arrays["tv@1"][0, 0], [0.1, 0.2])
