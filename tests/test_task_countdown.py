"""Countdown: the safe expression checker, the solver, the generator and the reader."""

import fractions
import itertools
import json
import random
import re
import time

import pytest

from rewards.tasks import CountdownTask, get_task
from rewards.tasks import countdown as C
from rewards.tasks import expression as X

F = fractions.Fraction


def brute_force_values(numbers):
  """Every value of every expression using each number once: an independent solver that
  tries all orders, operators and bracketings (no memo, no shared code)."""

  def trees(values):
    if len(values) == 1:
      yield values[0]
      return
    for i in range(1, len(values)):
      for left in trees(values[:i]):
        for right in trees(values[i:]):
          yield left + right
          yield left - right
          yield left * right
          if right != 0:
            yield left / right

  found = set()
  for order in itertools.permutations([F(n) for n in numbers]):
    found.update(trees(list(order)))
  return found


def _score(expr, numbers, target):
  task = get_task("countdown")
  example = task._example("x", numbers, target, None, "compact")
  return task.score(example, f"<answer>{expr}</answer>")["correct"]


def test_a_real_d1_instance_is_scored_by_value_and_numbers():
  # d1's test file format: {"input": "44,19,35", "output": "98"}
  assert _score("44 + 19 + 35", [44, 19, 35], 98) == 1.0
  assert _score("(35+19)+44", [44, 19, 35], 98) == 1.0
  assert _score("44 + 19 + 34", [44, 19, 35], 98) == 0.0  # a number not given
  assert _score("44 + 19 + 36", [44, 19, 35], 98) == 0.0
  assert _score("30-(100-93)", [30, 100, 93], 23) == 1.0
  assert _score("93 - 100 + 30", [30, 100, 93], 23) == 1.0


@pytest.mark.parametrize("expr, status", [
    ("30-(100-93)", "ok"),
    ("30-100+93", "ok"),
    (" ( 30 - ( 100 - 93 ) ) ", "ok"),
    ("30-(100-93)+0", "numbers"),  # an extra literal
    ("30-(100-93)*1", "numbers"),
    ("30+30-37", "numbers"),  # a number reused, another unused
    ("30-(100-93)-30+30", "numbers"),
    ("100-93", "numbers"),  # a number unused
    ("30-(100-93) = 23", "syntax"),
    ("23", "numbers"),
    ("-(93-100)+30-14", "syntax"),  # unary minus is rejected
    ("-30+100-47", "syntax"),
    ("30--(100-93)", "syntax"),
    ("+30-(100-93)", "syntax"),
    ("30.0-(100-93)", "syntax"),
    ("030-(100-93)", "syntax"),  # leading zero
    ("30(100-93)", "syntax"),  # implicit multiplication
    ("30-()100-93", "syntax"),
    ("30-(100-93", "syntax"),
    ("30-100-93)", "syntax"),
    ("30 100 93", "syntax"),
    ("9**9**9", "syntax"),
    ("30^100^93", "syntax"),
    ("30-(100-93)\u00d71", "syntax"),
    ("\u0663\u0660-(100-93)", "syntax"),  # Arabic-Indic digits
    ("__import__('os')", "syntax"),
    ("", "syntax"),
    ("   ", "syntax"),
])
def test_expressions_are_parsed_strictly(expr, status):
  assert X.check_countdown(expr, [30, 100, 93], 23) == status


def test_division_by_zero_is_a_wrong_answer_not_a_crash():
  assert X.check_countdown("3/(5-5)", [5, 5, 3], 0) == "division_by_zero"
  assert _score("3/(5-5)", [5, 5, 3], 0) == 0.0
  assert X.check_countdown("(5-5)/3", [5, 5, 3], 0) == "ok"


def test_fractional_intermediates_are_exact():
  # 8 / (3 - 8/3) = 24 only with exact fractions
  assert X.check_countdown("8/(3-8/3)", [8, 3, 8, 3], 24) == "ok"
  assert X.evaluate(X.parse("1/3+1/3+1/3")) == 1
  assert X.check_countdown("6/4", [6, 4], 2) == "value"


def test_huge_and_deeply_nested_inputs_are_rejected_quickly():
  start = time.perf_counter()
  assert X.check_countdown("1+" * 100_000 + "1", [1, 1], 2) == "syntax"
  assert X.check_countdown("(" * 50 + "1+1" + ")" * 50, [1, 1], 2) == "syntax"
  assert X.check_countdown("9" * 150 + "+1", [1, 1], 2) == "numbers"
  assert X.check_countdown("(" * 10_000, [1], 1) == "syntax"
  assert time.perf_counter() - start < 1.0
  assert X.check_countdown("(" * 16 + "1+1" + ")" * 16, [1, 1], 2) == "ok"


def test_answers_come_from_the_last_box_then_the_answer_tag():
  task = get_task("countdown")
  example = task._example("x", [30, 100, 93], 23, None, "compact")
  assert task.score(example, "<answer>\\boxed{30-(100-93)}</answer>")["correct"] == 1.0
  assert task.score(example, "\\boxed{1+1} then \\boxed{30 - (100 - 93)}")["correct"] == 1.0
  assert task.score(example, "<answer>30-(100-93)</answer> \\boxed{30+100+93}")["correct"] == 0
  assert task.score(example, "30-(100-93)")["answered"] == 0.0  # bare text is no answer
  scores = task.score(example, "<think>x</think><answer>30+100-93</answer>")
  assert scores == {"correct": 0.0, "valid_expression": 1.0, "answered": 1.0, "format": 1.0}


def test_the_dp_solver_reaches_exactly_the_targets_brute_force_reaches():
  rng = random.Random(1)
  for size in (2, 3, 3, 3, 4, 4):
    numbers = [rng.randint(1, 30) for _ in range(size)]
    expected = {int(v) for v in brute_force_values(numbers)
                if v.denominator == 1 and -50 <= v <= 200}
    found = C.reachable(numbers, -50, 200)
    assert set(found) == expected, numbers
    for target, node in found.items():
      assert X.check_countdown(X.to_text(node), numbers, target) == "ok"
      assert X.check_countdown(X.to_text(node, spaced=True), numbers, target) == "ok"


@pytest.mark.parametrize("sizes", [(3,), (4,)])
def test_every_generated_instance_is_solvable_by_an_independent_brute_force(sizes):
  task = CountdownTask(sizes=sizes)
  for e in task.examples("test", limit=40 if sizes == (3,) else 12):
    numbers, target = e.meta["numbers"], e.meta["target"]
    assert len(numbers) == sizes[0] and all(1 <= n <= 100 for n in numbers)
    assert 1 <= target <= 100
    assert F(target) in brute_force_values(numbers)
    assert X.check_countdown(e.answer, numbers, target) == "ok"


def test_an_unsolvable_instance_has_no_solver_answer():
  assert C.solve([1, 1, 1], 50) is None
  assert C.solve([2, 2, 2], 8).__class__ is tuple


def test_the_split_holds_out_whole_number_multisets():
  task = get_task("countdown")
  train = {tuple(sorted(e.meta["numbers"])) for e in task.examples("train", limit=2000)}
  test = {tuple(sorted(e.meta["numbers"])) for e in task.examples("test", limit=256)}
  valid = {tuple(sorted(e.meta["numbers"])) for e in task.examples("validation", limit=256)}
  assert not train & test and not train & valid and not test & valid
  assert all(C.split_of(list(n)) == "test" for n in test)
  assert C.split_of([30, 100, 93]) == C.split_of([93, 30, 100])


def test_four_number_instances_mix_with_three_when_asked():
  sizes = {len(e.meta["numbers"]) for e in CountdownTask(sizes=(3, 4)).examples("train", limit=60)}
  assert sizes == {3, 4}
  with pytest.raises(ValueError, match="sizes"):
    CountdownTask(sizes=(7,))
  with pytest.raises(ValueError, match="number_range"):
    CountdownTask(number_range=(10, 1))


def test_compact_prompts_and_targets_have_the_documented_shape():
  e = get_task("countdown").examples("test", limit=1)[0]
  numbers, target = e.meta["numbers"], e.meta["target"]
  assert e.prompt == f"Make {target:03d} from {','.join(f'{n:03d}' for n in numbers)}"
  assert e.target.startswith("<think>") and e.target.endswith(f"<answer>{e.answer}</answer>")
  assert " " not in e.target
  think = e.target[len("<think>"):e.target.index("</think>")]
  # every step is `AAAA op BBBB=CCCC`: four digits per number, so a digit's place is its column
  for step in think.split(","):
    assert re.fullmatch(r"\d{4}[-+*/]\d{4}=\d{4}", step), step
  assert not re.search(r"(?<!\d)0\d", e.answer)  # the scored answer has no leading zeros
  p = get_task("countdown").examples("test", limit=1, style="protocol")[0]
  assert p.prompt.endswith(f"Numbers: {numbers}\nTarget: {target}")
  assert "\\boxed{" in p.target


def _ops(node):
  return "".join(step[next(i for i, ch in enumerate(step) if ch in "+-*/")]
                 for step in X.steps(node))


@pytest.mark.parametrize("numbers, target, ops", [
    ([13, 22, 7], 28, "-+"),   # 22-7=15, 13+15: smaller intermediates than 13+22-7
    ([19, 13, 21], 11, "--"),  # 21-19=2, 13-2 (not 19+13=32, 32-21)
    ([6, 12, 10], 5, "*/"),    # one * and one / cost less than two /
    ([3, 27, 9], 6, "/+"),     # 27/9+3: at equal cost, the smaller largest intermediate
    ([4, 25, 3], 97, "*-"),    # * only where + and - cannot reach the target
])
def test_the_shown_solution_is_the_cheapest_one(numbers, target, ops):
  assert _ops(C.solve(numbers, target)) == ops


def test_compact_answers_parenthesize_every_inner_operation_and_score():
  task = get_task("countdown")
  for ex in task.examples("train", limit=50):
    assert task.score(ex, ex.target)["correct"] == 1.0
    inner = ex.answer.count("+") + ex.answer.count("-") + ex.answer.count("*") + \
        ex.answer.count("/") - 1
    assert ex.answer.count("(") == inner
    assert X.evaluate(X.parse(ex.answer)) == ex.meta["target"]


def _write(tmp_path, lines):
  path = tmp_path / "cd.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_the_jsonl_reader_keeps_file_order_and_solves_each_row(tmp_path):
  path = _write(tmp_path, [json.dumps({"input": "30,100,93", "output": "23"}), "",
                           json.dumps({"input": "44, 19, 35", "output": 98}),
                           json.dumps({"input": "1,1,1", "output": "50"})])
  examples = get_task("countdown").examples("test", path=path)
  assert [e.meta["numbers"] for e in examples] == [[30, 100, 93], [44, 19, 35], [1, 1, 1]]
  assert [e.meta["target"] for e in examples] == [23, 98, 50]
  assert get_task("countdown").score(examples[0], examples[0].target)["correct"] == 1.0
  assert examples[2].meta["solvable"] is False and examples[2].target == ""


@pytest.mark.parametrize("line, message", [
    ('{"input": "30,100,93"}', "line 2: missing key 'output'"),
    ('{"output": "23"}', "line 2: missing key 'input'"),
    ('{"input": "30,100,x", "output": "23"}', "line 2: 'input' must be comma-separated"),
    ('{"input": "30,,93", "output": "23"}', "line 2: 'input'"),
    ('{"input": [30, 100], "output": "23"}', "line 2: 'input' must be a string"),
    ('{"input": "30,100,93", "output": "2.5"}', "line 2: 'output' must be an integer"),
    ('{"input": "30,100,93", "output": true}', "line 2: 'output' must be an integer"),
    ('{"input": "30,100,93", "output": "23"', "line 2: invalid JSON"),
    ('[1, 2]', "line 2: expected a JSON object"),
])
def test_malformed_jsonl_rows_raise_value_errors_naming_the_line(tmp_path, line, message):
  path = _write(tmp_path, [json.dumps({"input": "1,2,3", "output": "6"}), line])
  with pytest.raises(ValueError, match=message):
    get_task("countdown").examples("test", path=path)
