"""The task interface: registry, answer extraction, formats, voting, and properties every
task's examples must have (self-consistent targets, determinism, clear errors)."""

import dataclasses
import json
import time

import pytest

from rewards.tasks import Example, Task, extract_answer_text, get_task, majority_answer
from rewards.tasks import register, task_names
from rewards.tasks.base import last_answer_tag, last_boxed
from rewards.tasks.formats import style_format_ok, tagged_format_ok

GENERATED = ("sudoku", "countdown", "arith")
STYLES = ("compact", "protocol")


def test_the_five_builtin_tasks_are_registered_and_implement_the_protocol():
  assert set(task_names()) >= {"sudoku", "countdown", "arith", "gsm8k", "math500"}
  for name in task_names():
    task = get_task(name)
    assert isinstance(task, Task)
    assert task.name == name


def test_unknown_task_name_raises_a_value_error_listing_the_known_names():
  with pytest.raises(ValueError, match="known tasks: .*countdown.*sudoku"):
    get_task("sodoku")


def test_registering_a_second_task_under_a_taken_name_needs_replace():
  with pytest.raises(ValueError, match="already registered"):
    register(get_task("sudoku"))
  with pytest.raises(ValueError, match="Task protocol"):
    register(object())


def test_boxed_answer_wins_over_answer_tag_and_the_last_box_counts():
  text = "<answer>7</answer> first \\boxed{1} then \\boxed{\\frac{1}{2}}"
  assert extract_answer_text(text) == "\\frac{1}{2}"
  assert extract_answer_text("<answer> 42 </answer> trailing") == "42"
  assert extract_answer_text("<answer>1</answer><answer>2</answer>") == "2"
  assert extract_answer_text("no answer at all") is None
  assert extract_answer_text("") is None


def test_unbalanced_last_box_falls_back_to_an_earlier_balanced_box_or_the_answer_tag():
  assert last_boxed("\\boxed{3} and \\boxed{\\frac{1}{2}") == "3"
  assert extract_answer_text("<answer>5</answer> \\boxed{\\frac{1") == "5"
  assert last_boxed("\\boxed{a{b}c}") == "a{b}c"
  assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"  # escaped braces are not counted
  assert last_boxed("\\boxed{}") == ""
  assert last_answer_tag("<answer>unclosed") is None
  assert last_answer_tag("</answer><answer>") is None


def test_extraction_of_adversarially_long_inputs_takes_linear_time():
  start = time.perf_counter()
  assert last_boxed("\\boxed{" * 100_000) is None
  assert last_boxed("\\boxed{{" * 50_000 + "}") is None
  assert last_answer_tag("<answer>" * 100_000) is None
  assert extract_answer_text("x" * 1_000_000 + "\\boxed{1}") == "1"
  assert time.perf_counter() - start < 2.0


def test_majority_vote_ignores_none_and_breaks_ties_by_first_occurrence():
  assert majority_answer(["3", None, "4", "4", "3"]) == "3"
  assert majority_answer(["4", "3", "3", "4"]) == "4"
  assert majority_answer([None, "5", "6", "6"]) == "6"
  assert majority_answer([None, None]) is None
  assert majority_answer([]) is None
  assert majority_answer([" 7", "7 ", "8"]) == " 7"  # default normalize strips
  assert majority_answer(["", "  ", "9"]) == "9"  # empty answers do not vote


def test_majority_vote_uses_the_given_normalisation():
  from rewards.tasks.numeric import number_string
  assert majority_answer(["1,000", "5", "1000.00", "5"], normalize=number_string) == "1,000"
  assert majority_answer(["a", "B", "b"], normalize=str.lower) == "B"


def test_compact_format_needs_think_then_answer_and_tolerates_whitespace_and_trailing_text():
  ok = "<think>1+1=2</think><answer>2</answer>"
  assert tagged_format_ok(ok, "think")
  assert tagged_format_ok(f"  \n{ok}\n\n", "think")
  assert tagged_format_ok("<think>a</think>\n <answer>2</answer> EOS EOS", "think")
  assert not tagged_format_ok("<answer>2</answer>", "think")
  assert not tagged_format_ok("preamble <think>a</think><answer>2</answer>", "think")
  assert not tagged_format_ok("<think>a</think>junk<answer>2</answer>", "think")
  assert not tagged_format_ok("<think>a</think><answer> </answer>", "think")
  assert not tagged_format_ok("<think>a</think><answer>2</answer><answer>3</answer>", "think")
  assert not tagged_format_ok("<think>a<think>b</think><answer>2</answer>", "think")
  assert not tagged_format_ok("<answer>2</answer><think>a</think>", "think")
  assert not tagged_format_ok("", "think")
  assert tagged_format_ok("<answer>1234</answer>", None)
  assert not tagged_format_ok("<think>x</think><answer>1234</answer>", None)
  assert not tagged_format_ok("<answer>1234</answer><answer>1234</answer>", None)
  assert not tagged_format_ok("<answer>1234</answer></answer>", None)


def test_protocol_format_accepts_a_missing_opening_reasoning_tag_and_can_require_a_box():
  full = "<reasoning>\nsteps\n</reasoning>\n<answer>\n\\boxed{5}\n</answer>"
  assert tagged_format_ok(full, "reasoning", optional_open=True, boxed=True)
  assert tagged_format_ok(full[len("<reasoning>"):], "reasoning", optional_open=True, boxed=True)
  assert not tagged_format_ok(full[len("<reasoning>"):], "reasoning", boxed=True)
  assert not tagged_format_ok(full.replace("\\boxed{5}", "5"), "reasoning", boxed=True)
  assert not tagged_format_ok(full.replace("\\boxed{5}", "\\boxed{5"), "reasoning", boxed=True)


def test_style_none_accepts_either_style_and_unknown_styles_raise():
  compact = "<think>a</think><answer>2</answer>"
  protocol = "<reasoning>a</reasoning><answer>\\boxed{2}</answer>"
  kw = dict(compact_reasoning=True, protocol_boxed=True)
  assert style_format_ok(compact, None, **kw) and style_format_ok(protocol, None, **kw)
  assert not style_format_ok(compact, "protocol", **kw)
  assert not style_format_ok(protocol, "compact", **kw)
  with pytest.raises(ValueError, match="unknown style"):
    style_format_ok(compact, "chatty", **kw)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("split", ("train", "validation", "test"))
@pytest.mark.parametrize("name", GENERATED)
def test_every_generated_target_scores_correct_verifies_and_is_well_formed(name, split, style):
  task = get_task(name)
  examples = task.examples(split, limit=150, style=style)
  assert len(examples) == 150
  assert len({e.id for e in examples}) == 150
  assert len({e.prompt for e in examples}) == 150
  for e in examples:
    assert e.id.startswith(f"{name}-{split}-")
    assert e.meta["style"] == style
    scores = task.score(e, e.target)
    assert scores["correct"] == 1.0, (e, scores)
    assert scores["format"] == 1.0, (e, scores)
    assert task.verify(e, e.target)
    assert task.format_ok(e.target, style=style) and task.format_ok(e.target)
    assert task.extract_answer(e.target) is not None
    assert all(isinstance(v, float) for v in scores.values())


@pytest.mark.parametrize("name", GENERATED)
def test_the_same_seed_gives_the_same_examples_and_a_smaller_limit_a_prefix(name):
  task = get_task(name)
  first = task.examples("train", limit=40, seed=3)
  assert first == task.examples("train", limit=40, seed=3)
  assert task.examples("train", limit=15, seed=3) == first[:15]
  assert [e.prompt for e in task.examples("train", limit=40, seed=4)] != [e.prompt for e in first]


@pytest.mark.parametrize("name", GENERATED)
def test_wrong_and_empty_responses_score_zero(name):
  task = get_task(name)
  example = task.examples("test", limit=1)[0]
  for text in ("", "   ", "<answer></answer>", "<answer>garbage</answer>",
               "\\boxed{" * 50):
    scores = task.score(example, text)
    assert scores["correct"] == 0.0 and not task.verify(example, text), text
    assert scores["format"] == float(text == "<answer>garbage</answer>" and name == "sudoku")


@pytest.mark.parametrize("name", ("sudoku", "countdown", "arith", "gsm8k", "math500"))
def test_bad_split_style_or_limit_raise_value_errors(name):
  task = get_task(name)
  with pytest.raises(ValueError, match="unknown split"):
    task.examples("dev")
  with pytest.raises(ValueError, match="unknown style"):
    task.examples("test", style="verbose", limit=1)
  with pytest.raises(ValueError, match="limit"):
    task.examples("test", limit=-1)


def test_examples_are_frozen_and_json_serialisable():
  for name in GENERATED:
    example = get_task(name).examples("test", limit=2, style="protocol")[0]
    assert json.loads(json.dumps(dataclasses.asdict(example)))["id"] == example.id
    with pytest.raises(dataclasses.FrozenInstanceError):
      example.answer = "x"
  assert Example("a", "p", "t", "x").meta == {}
