"""The reward diagnostic (`mro diagnose`): its ranking metrics on hand-built cases, and one
end-to-end run on the shipped Sudoku model."""

import math

import numpy as np
import pytest

from mro import cli
from mro.evaluation import diagnostic as D


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
  out = tmp_path / "diag.jsonl"
  code = cli.main(["diagnose", "--task", "sudoku", "--limit", "4", "--steps", "6", "--k", "3",
                   "--group-steps", "3", "--out", str(out)])
  text = capsys.readouterr().out
  assert code == 0
  for reward in ("tv@1", "tv@all", "ppl", "q@vote", "q@verifier", "tv@1+ppl"):
    assert f"| {reward} |" in text
  assert len(out.read_text().splitlines()) == text.count("\n| ") - 1
  with pytest.raises(ValueError, match="n_verify"):
    D.DiagnosticConfig(D.EvalConfig.build("sudoku", search="best-of-n", steps="6"),
                       n_verify=(0,))


def test_a_bad_n_verify_list_is_one_named_error_before_any_work(capsys):
  assert cli.main(["diagnose", "--task", "sudoku", "--steps", "6", "--n-verify", "1,al"]) == 2
  err = capsys.readouterr().err
  assert "--n-verify: expected a positive integer or 'all', got 'al'" in err
  assert "Traceback" not in err
