"""MATH500: real rows judged by math-verify (fractions, decimals, intervals, text, sets)."""

import time

import pytest

from rewards.tasks import get_task
from rewards.tasks import math500 as M

TASK = get_task("math500")


@pytest.fixture(scope="module")
def rows(benchmark_data):
  return {e.meta["unique_id"]: e
          for e in TASK.examples("test", path=str(benchmark_data / "math500"))}


def test_all_500_rows_are_read_in_order(rows, benchmark_data):
  assert len(rows) == 500
  first = TASK.examples("test", limit=1)[0]
  assert first.meta["unique_id"] == "test/precalculus/807.json"
  assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
  assert TASK.examples("test", path=str(benchmark_data / "math500" / "test.jsonl"), limit=3)[2] \
      .meta["unique_id"] == list(rows)[2]


def test_reference_targets_score_correct_in_both_styles():
  for style in ("compact", "protocol"):
    for e in TASK.examples("test", limit=60, style=style):
      assert TASK.score(e, e.target) == {"correct": 1.0, "answered": 1.0, "format": 1.0}, e.id


@pytest.mark.parametrize("uid, right, wrong", [
    ("test/algebra/2584.json",  # \frac{14}{3}
     ["\\frac{14}{3}", "\\dfrac{14}{3}", "14/3", "4\\frac{2}{3}", "4.666666667"],
     ["4.67", "\\frac{3}{14}", "14"]),
    ("test/algebra/1349.json",  # \text{Evelyn}
     ["\\text{Evelyn}", "Evelyn", "\\text{ Evelyn }"], ["\\text{Bob}", "Eve"]),
    ("test/precalculus/927.json", ["90^\\circ", "90", "90^{\\circ}"], ["\\frac{\\pi}{3}", "89"]),
    ("test/algebra/2193.json", ["x=5", "5", "x = 5"], ["x=6", "-5"]),
    ("test/intermediate_algebra/1388.json", ["1,-2", "-2, 1", "\\{1,-2\\}"], ["1", "1,2"]),
    ("test/prealgebra/1558.json", ["1.25", "\\frac{5}{4}", "5/4", "1.250"], ["1.2", "125"]),
    ("test/intermediate_algebra/47.json", ["(-2,1)", "\\left(-2, 1\\right)"],
     ["[-2,1]", "(-2,1]", "(-1,2)"]),
    ("test/intermediate_algebra/558.json", ["(3,4]", "(3, 4]"], ["(3,4)", "[3,4]"]),
    ("test/precalculus/807.json", ["(3, \\frac{\\pi}{2})", "\\left(3,\\frac{\\pi}{2}\\right)"],
     ["(3, \\pi)", "(\\frac{\\pi}{2}, 3)"]),
    ("test/intermediate_algebra/515.json", ["\\frac{4}{3}", "\\frac43", "4/3"], ["\\frac34"]),
])
def test_equivalent_answers_are_right_and_others_wrong(rows, uid, right, wrong):
  e = rows[uid]
  for answer in right:
    for text in (f"<answer>\\boxed{{{answer}}}</answer>", f"<answer>{answer}</answer>"):
      assert TASK.score(e, text)["correct"] == 1.0, text
  for answer in wrong:
    assert TASK.score(e, f"\\boxed{{{answer}}}")["correct"] == 0.0, answer


def test_the_last_balanced_box_is_the_answer(rows):
  e = rows["test/algebra/2584.json"]
  assert TASK.extract_answer("\\boxed{3} so \\boxed{\\frac{14}{3}}") == "\\frac{14}{3}"
  assert TASK.score(e, "\\boxed{\\frac{14}{3}} oops \\boxed{\\frac{1}{")["correct"] == 1.0
  assert TASK.score(e, "<answer>3</answer> \\boxed{\\frac{14}{3}}")["correct"] == 1.0
  assert TASK.score(e, "\\boxed{\\frac{14}{3}} <answer>3</answer>")["correct"] == 1.0
  assert TASK.score(e, "the answer is 14/3")["answered"] == 0.0  # no box, no tag
  assert TASK.score(e, "\\boxed{}")["correct"] == 0.0
  assert TASK.score(e, "")["correct"] == 0.0


def test_garbage_and_hostile_answers_are_wrong_not_errors_and_cost_little(rows):
  e = rows["test/algebra/2584.json"]
  start = time.perf_counter()
  for junk in ("}}}{{{", "\\frac{", "9^{9^{9}}", "9^{9^{9^{9}}}", "(1+x)^{100000}",
               "1000000!", "x" * 5000, "\\boxed{" * 200, "\\frac{1}{0}",
               "__import__('os').system('true')", "\\text{" + "a" * 2000 + "}"):
    assert TASK.score(e, f"<answer>{junk}</answer>")["correct"] == 0.0, junk
  assert time.perf_counter() - start < 4.0  # each of the first five alone used to cost 5 s
  assert TASK.score(e, "\\boxed{2^{2} + \\frac{2}{3}}")["correct"] == 1.0


def test_normalisation_only_changes_spelling():
  assert M.normalize_answer(" $\\left( 3, \\dfrac{\\pi}{2} \\right)$. ") == "( 3, \\frac{\\pi}{2} )"
  assert M.normalize_answer("1\\,000") == "1000"
  assert M.normalize_answer("\\leftarrow") == "\\leftarrow"


def test_only_a_test_split_exists_and_there_is_no_label_free_verifier(rows):
  with pytest.raises(ValueError, match="unknown split 'train'"):
    TASK.examples("train")
  with pytest.raises(NotImplementedError):
    TASK.verify(rows["test/algebra/2584.json"], "\\boxed{1}")
