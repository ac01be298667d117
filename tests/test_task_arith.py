"""Arithmetic: the scratchpad formats, the held-out split, extraction and verification."""

import random

import pytest

from rewards.tasks import ArithTask, get_task
from rewards.tasks import arith as A


def test_the_addition_scratchpad_goes_column_by_column_with_carries_most_significant_first():
  assert A.compact_target(478, "+", 365, 3) == (
      "<think>4+3+1=08,7+6+1=14,8+5+0=13</think><answer>0843</answer>")
  assert A.compact_target(999, "+", 1, 3) == (
      "<think>9+0+1=10,9+0+1=10,9+1+0=10</think><answer>1000</answer>")
  assert A.compact_target(7, "+", 5, 3) == (
      "<think>0+0+0=00,0+0+1=01,7+5+0=12</think><answer>0012</answer>")
  # operands wider than the width get every column
  assert A.compact_target(1234, "+", 1, 2).count("=") == 4


def test_the_multiplication_scratchpad_writes_padded_partials_and_running_sums():
  assert A.compact_target(478, "*", 365, 3) == (
      "<think>3>143400=174470,6>028680=031070,5>002390</think><answer>174470</answer>")
  assert A.compact_target(12, "*", 3, 2) == (
      "<think>0>0000=0036,3>0036</think><answer>0036</answer>")


def test_compact_prompts_are_zero_padded_to_the_widest_operand():
  task = get_task("arith")
  assert task._example("x", 478, "+", 65, "compact").prompt == "00478+00065="
  assert task._example("x", 7, "*", 65, "compact").prompt == "007*065="


def _replay_addition(steps):
  digits, carry = [], 0
  for step in steps:
    lhs, total = step.split("=")
    x, y, c = map(int, lhs.split("+"))
    assert c == carry and int(total) == x + y + c and len(total) == 2
    digits.append(total[1])
    carry = int(total[0])
  return int(("1" if carry else "") + "".join(reversed(digits)))


def _replay_multiplication(a, b, rows):
  running = 0
  for j, (digit, partial, total) in enumerate(rows):
    assert digit == (b // 10**j) % 10 and partial == a * digit * 10**j
    running += partial
    assert total == running
  return running


def _replay_compact(text):
  """The answer a reader computes from the compact scratchpad alone (most significant
  step first, every number zero-padded)."""
  think = text[len("<think>"):text.index("</think>")].split(",")[::-1]
  if "+" in think[0]:
    return _replay_addition(think)
  running = 0
  for j, step in enumerate(think):
    digit, rest = step.split(">")
    partial, _, total = rest.partition("=")
    assert int(partial) % 10**j == 0
    running += int(partial)
    if j:
      assert int(total) == running
  return running


def test_replaying_the_scratchpad_digit_by_digit_gives_the_answer():
  rng = random.Random(0)
  for _ in range(300):
    a, b = rng.randint(0, 10**rng.randint(1, 7)), rng.randint(0, 10**rng.randint(1, 7))
    width = rng.randint(0, 8)
    assert _replay_addition(A.addition_steps(a, b, width)) == a + b
    assert _replay_multiplication(a, b, A.multiplication_steps(a, b, width)) == a * b
    for op in "+*":
      text = A.compact_target(a, op, b, width)
      assert _replay_compact(text) == A.compute(a, op, b)
      # every step of one target has the same width: a digit's place is its column
      assert len({len(step) for step in text[7:text.index("</")].split(",")[:-1]}) <= 1


def test_default_targets_fit_a_56_token_generation():
  task = get_task("arith")
  for e in task.examples("train", limit=2000):
    tags = 4  # <think> </think> <answer> </answer>, one token each
    chars = len(e.target) - sum(len(t) for t in ("<think>", "</think>", "<answer>", "</answer>"))
    assert chars + tags <= 56, e.target
    assert task.score(e, e.target)["correct"] == 1.0


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
