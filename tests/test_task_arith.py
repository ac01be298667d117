"""Arithmetic: the scratchpad formats, the held-out split, extraction and verification."""

import random

import pytest

from rewards.tasks import ArithTask, get_task
from rewards.tasks import arith as A


def test_the_addition_scratchpad_goes_column_by_column_with_carries():
  assert A.compact_target(478, "+", 365) == (
      "<think>8+5+0=13,7+6+1=14,4+3+1=08</think><answer>843</answer>")
  assert A.compact_target(999, "+", 1) == (
      "<think>9+1+0=10,9+0+1=10,9+0+1=10</think><answer>1000</answer>")
  assert A.compact_target(0, "+", 0) == "<think>0+0+0=00</think><answer>0</answer>"


def test_the_multiplication_scratchpad_writes_reversed_partials_and_running_sums():
  assert A.compact_target(478, "*", 365) == (
      "<think>5>0932,6>08682=07013,3>004341=074471</think><answer>174470</answer>")
  assert A.compact_target(12, "*", 3) == "<think>3>63</think><answer>36</answer>"
  assert A.compact_target(7, "*", 10) == "<think>0>0,1>07=07</think><answer>70</answer>"


def _replay_addition(steps):
  digits, carry = [], 0
  for step in steps:
    lhs, total = step.split("=")
    x, y, c = map(int, lhs.split("+"))
    assert c == carry and int(total) == x + y + c and len(total) == 2
    digits.append(total[1])
    carry = int(total[0])
  return int(("1" if carry else "") + "".join(reversed(digits)))


def _replay_multiplication(a, b, steps):
  running = 0
  for j, step in enumerate(steps):
    digit, rest = step.split(">")
    partial, _, total = rest.partition("=")
    assert int(digit) == int(str(b)[::-1][j])
    assert partial.startswith("0" * j) and int(partial[::-1]) == a * int(digit) * 10**j
    running += int(partial[::-1])
    if j:
      assert int(total[::-1]) == running
  return running


def test_replaying_the_scratchpad_digit_by_digit_gives_the_answer():
  rng = random.Random(0)
  for _ in range(300):
    a, b = rng.randint(0, 10**rng.randint(1, 7)), rng.randint(0, 10**rng.randint(1, 7))
    assert _replay_addition(A.addition_steps(a, b)) == a + b
    assert _replay_multiplication(a, b, A.multiplication_steps(a, b)) == a * b


def test_default_targets_fit_a_96_token_generation():
  task = get_task("arith")
  for e in task.examples("train", limit=2000):
    tags = 4  # <think> </think> <answer> </answer>, one token each
    chars = len(e.target) - sum(len(t) for t in ("<think>", "</think>", "<answer>", "</answer>"))
    assert chars + tags <= 60, e.target


def test_operands_follow_the_digit_ranges():
  task = ArithTask(ops=("*",), mul_digits=(2, 2))
  for e in task.examples("train", limit=200):
    assert 10 <= e.meta["a"] <= 99 and 10 <= e.meta["b"] <= 99 and e.meta["op"] == "*"
  with pytest.raises(ValueError, match="mul_digits"):
    ArithTask(mul_digits=(3, 2))
  with pytest.raises(ValueError, match="ops"):
    ArithTask(ops=("-",))
  with pytest.raises(ValueError, match="generated"):
    get_task("arith").examples("test", path="/tmp/x.jsonl")


def test_the_split_holds_out_unordered_operand_pairs():
  task = get_task("arith")
  pairs = {s: {frozenset((e.meta["a"], e.meta["b"])) for e in task.examples(s, limit=1500)}
           for s in ("train", "validation", "test")}
  assert not pairs["train"] & pairs["test"]
  assert not pairs["train"] & pairs["validation"]
  assert not pairs["validation"] & pairs["test"]
  assert A.split_of(478, 365) == A.split_of(365, 478)


def test_verify_recomputes_the_operation_and_ignores_the_label():
  task = get_task("arith")
  e = task._example("x", 478, "*", 365, "compact")
  mislabelled = type(e)(e.id, e.prompt, e.target, "174471", e.meta)
  assert task.verify(mislabelled, "<answer>174470</answer>")
  assert task.score(mislabelled, "<answer>174470</answer>")["correct"] == 0.0
  assert not task.verify(e, "<answer>174471</answer>")


def test_answers_are_read_as_numbers_from_box_tag_or_last_number():
  task = get_task("arith")
  e = task._example("x", 999, "+", 1001, "compact")
  for text in ("<answer>2000</answer>", "<answer>2,000</answer>", "\\boxed{2000}",
               "<answer>2000.0</answer>", "so the sum is 2000", "<answer> 2000 </answer>EOS"):
    assert task.score(e, text)["correct"] == 1.0, text
  for text in ("<answer>200</answer>", "<answer>20000</answer>", "<answer>-2000</answer>",
               "\\boxed{1999} <answer>2000</answer>", ""):
    assert task.score(e, text)["correct"] == 0.0, text


def test_digit_accuracy_compares_right_aligned_digits():
  task = get_task("arith")
  e = task._example("x", 478, "+", 365, "compact")
  assert task.score(e, "<answer>843</answer>")["digit_accuracy"] == 1.0
  assert task.score(e, "<answer>853</answer>")["digit_accuracy"] == pytest.approx(2 / 3)
  assert task.score(e, "<answer>1843</answer>")["digit_accuracy"] == pytest.approx(3 / 4)
  assert task.score(e, "nothing")["digit_accuracy"] == 0.0
