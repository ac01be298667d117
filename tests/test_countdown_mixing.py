"""Countdown failures that mix two valid answers, token by token
(experiments/bench/countdown_mixing.py): hand-made outputs, no model."""

import json

import pytest

from experiments.bench import countdown_mixing as cm
from mro import paths
from mro.evaluation import mixing
from mro.files import append_jsonl
from rewards.tasks import expression, get_task

SHIPPED = str(paths.MODELS / "default" / "countdown")  # its tokenizer: positions are tokens
TOKENIZERS = ["chars", SHIPPED]
PROMPT = "Make 023 from 030,100,093"  # 8 renderings; A and B are two different solutions
A = "<think>0100-0093=0007,0030-0007=0023</think><answer>30-(100-93)</answer>"
B = "<think>0093+0030=0123,0123-0100=0023</think><answer>(93+30)-100</answer>"
# A's first step, B's second; the answer's first two tokens A's, the rest B's: no answer
MIXED = "<think>0100-0093=0007,0123-0100=0023</think><answer>303+30)-100</answer>"
# A with one wrong digit, one that no rendering has there
SLIP = "<think>0100-0093=0007,0030-0007=0023</think><answer>30-(100-94)</answer>"
SINGLE = "Make 027 from 029,033,066"  # one rendering: 29-(66/33)
SINGLE_WRONG = "<think>0066/0033=0002,0029-0002=0028</think><answer>29-(66/34)</answer>"


@pytest.fixture(scope="module", params=TOKENIZERS, ids=["chars", "tokens"])
def puzzles(request):
  return cm.Puzzles(request.param)


def _score(prompt, text):
  numbers, target, _ = cm.parse_prompt(prompt)
  return expression.check_countdown(get_task("countdown").extract_answer(text) or "",
                                    list(numbers), target)


def test_the_renderings_are_the_training_targets_and_every_one_is_a_valid_answer():
  task = get_task("countdown")
  for ex in task.examples("test", limit=30):
    numbers, target, width = cm.parse_prompt(ex.prompt)
    assert (list(numbers), target, width) == (ex.meta["numbers"], ex.meta["target"],
                                              task.prompt_width)
    rendered = mixing.renderings(numbers, target, width + 1)
    assert ex.target in rendered  # the canonical solution, rendered as trained
    assert all(_score(ex.prompt, r) == "ok" for r in rendered)
  rendered = mixing.renderings((30, 100, 93), 23, 4)
  assert {A, B} <= set(rendered) and len(rendered) == 8
  assert rendered[A] != rendered[B]  # two solutions, not one in two operand orders
  assert rendered["<think>0093+0030=0123,0123-0100=0023</think><answer>(93+30)-100</answer>"] \
      == rendered["<think>0030+0093=0123,0123-0100=0023</think><answer>(30+93)-100</answer>"]
  assert list(mixing.renderings((29, 33, 66), 27, 4)) == [
      "<think>0066/0033=0002,0029-0002=0027</think><answer>29-(66/33)</answer>"]


def test_the_shipped_tokenizer_counts_a_merged_pair_as_one_position():
  split, digits = mixing.splitter(SHIPPED)
  # 4 tags of 7-9 characters: 1 token each (-28); A's `-(` and B's `)-`: 1 token (-1)
  assert len(split(A)) == len(split(B)) == len(A) - 29
  assert len(digits) == 10 and all(len(split(d)) == 1 for d in "0123456789")


def test_an_output_taking_its_first_step_from_one_answer_and_the_rest_from_another_is_a_mix(
    puzzles):
  assert _score(PROMPT, MIXED) == "syntax"  # a failure
  c = cm.classify(puzzles, PROMPT, MIXED)
  assert c["kind"] == "mix" and c["d2"] == 0 and c["d1"] > 0
  assert set(c["pair"]) == {A, B} and c["distinct"] and c["d1"] >= 2
  assert c["think_mix"]
  # the same think part with B's whole answer mixes too, but is scored right (not a failure)
  right = MIXED.replace("303+30)-100", "(93+30)-100")
  assert _score(PROMPT, right) == "ok" and cm.classify(puzzles, PROMPT, right)["kind"] == "mix"


def test_one_solution_with_one_wrong_digit_is_not_a_mix(puzzles):
  assert _score(PROMPT, SLIP) == "numbers"  # a failure
  c = cm.classify(puzzles, PROMPT, SLIP)
  assert c["kind"] == "stray" and c["d1"] == 1 and not c["loose"] and not c["think_mix"]
  assert cm.classify(puzzles, PROMPT, A)["kind"] == "valid"


def test_a_wrong_output_of_a_single_solution_puzzle_is_never_a_mix(puzzles):
  assert len(puzzles.get(SINGLE)["texts"]) == 1
  assert _score(SINGLE, SINGLE_WRONG) == "numbers"
  c = cm.classify(puzzles, SINGLE, SINGLE_WRONG)
  assert c["kind"] == "stray" and c["d1"] == c["d2"] == 2


def test_other_lengths_and_broken_layouts_are_their_own_kinds(puzzles):
  assert cm.classify(puzzles, PROMPT, "<think>0100-0093=0007</think><answer>7</answer>")[
      "kind"] == "length"
  assert cm.classify(puzzles, PROMPT, "0100-0093=0007 30-(100-93)")["kind"] == "malformed"


def test_compare_needs_two_candidates_for_a_mix_and_reports_three_apart():
  cands = [(1, 1, 1, 1), (2, 2, 2, 2), (3, 3, 3, 3)]
  assert mixing.compare((1, 1, 1), cands) is None  # no candidate of its length
  assert mixing.compare((1, 1, 1, 1), cands)["kind"] == "valid"
  mix = mixing.compare((1, 2, 2, 1), cands, classes=["x", "y", "y"])
  assert mix["kind"] == "mix" and mix["pair"] == (0, 1) and (mix["d1"], mix["d2"]) == (2, 0)
  assert mix["distinct"]
  # covered by the first two (2 tokens off each) and by the nearest (1 off) with another:
  # the pair shown keeps the nearest
  near = mixing.compare((3, 2, 2, 2), [(3, 9, 2, 9), (9, 2, 9, 2), (2, 2, 2, 2), (3, 3, 3, 3)])
  assert near["kind"] == "mix" and near["d1"] == 1 and 2 in near["pair"]
  assert not mixing.compare((1, 2, 2, 1), cands, classes=["x", "x", "y"])["distinct"]
  assert mixing.compare((1, 2, 3, 3), cands)["kind"] == "mix3"  # needs all three
  stray = mixing.compare((1, 1, 1, 4), cands)
  assert stray["kind"] == "stray" and (stray["d1"], stray["d2"]) == (1, 1)
  assert not stray["d2"] < stray["d1"]
  loose = mixing.compare((1, 1, 2, 4), cands)
  assert loose["kind"] == "stray" and (loose["d1"], loose["d2"]) == (2, 1)


def test_chance_counts_the_digit_slips_that_another_answer_has_there():
  digits = frozenset(range(10))
  assert cm.chance([(1, 2)], digits, range(10)) == (0, 18)  # one answer: never
  assert cm.chance([(1, 2), (1, 3)], digits, range(10)) == (2, 36)
  assert cm.chance([(1, 2), (1, 3, 3)], digits, range(10)) == (0, 45)  # other lengths
  # such a slip is a mix by the definition: the 0 is another answer's digit there
  slip0 = SLIP.replace("100-94", "100-90")
  c = cm.classify(cm.Puzzles("chars"), PROMPT, slip0)
  assert c["kind"] == "mix" and c["d1"] == 1  # so not a `mix 2+`
  assert A in c["pair"]  # the nearest answer, and one with a 0 there


def _row(sid, steps, i, prompt, output):
  return {"setting_id": sid, "steps": steps, "example_id": f"countdown-test-{i:05d}",
          "prompt": prompt, "output": output,
          "score": {"correct": float(_score(prompt, output) == "ok")}}


def test_the_summary_splits_failures_by_puzzle_kind_and_counts_new_few_step_mixes(
    tmp_path, capsys):
  gens = tmp_path / "cd.generations.jsonl"
  append_jsonl(gens, [_row("full", 8, 0, PROMPT, A), _row("full", 8, 1, SINGLE, SINGLE_WRONG),
                      _row("full", 8, 2, PROMPT, SLIP)])
  append_jsonl(gens, [_row("few", 2, 0, PROMPT, MIXED), _row("few", 2, 1, SINGLE, SINGLE_WRONG),
                      _row("few", 2, 2, PROMPT, "<answer>7</answer>")])
  out = tmp_path / "summary.json"
  assert cm.main([str(gens), "--tokenizer", SHIPPED, "--out", str(out)]) == 0
  s = json.loads(out.read_text())
  assert s["puzzles"]["n"] == 2 and s["puzzles"]["single"] == 1 and s["puzzles"]["several"] == 1
  assert 0 < s["puzzles"]["chance_one_digit_mix"] < 1
  full, few = s["settings"]
  assert (full["steps"], few["steps"]) == (8, 2)
  assert (full["wrong"], full["single"], full["several"]) == (
      2, {"n": 1, "wrong": 1}, {"n": 2, "wrong": 1})
  assert full["kinds"]["stray"] == 2 and full["kinds"]["mix"] == 0
  assert few["kinds"] == {"mix": 1, "mix3": 0, "stray": 1, "length": 0, "malformed": 1}
  assert few["mix_distinct"] == few["mix_2plus"] == few["think_mix"] == 1
  assert few["new"] == {"wrong": 1, "mix": 1, "think_mix": 1}  # row 0: right at 8 steps
  assert few["examples"][0]["output"] == MIXED and set(few["examples"][0]["from"]) == {A, B}
  printed = capsys.readouterr().out
  assert "| 2 | 3 | 3/3 (100%) | 1/1 (100%) | 2/2 (100%) | 1 | 1/1 (100%) |" in printed


def test_bad_input_is_refused_naming_the_file(tmp_path):
  gens = tmp_path / "g.jsonl"
  append_jsonl(gens, [{"setting_id": "s", "steps": 2, "prompt": PROMPT, "output": A}])
  with pytest.raises(ValueError, match=r"g.jsonl row 1: missing \['score'\]"):
    cm.measure(gens, "chars")
  other = tmp_path / "o.jsonl"
  append_jsonl(other, [{**_row("s", 2, 0, PROMPT, A), "prompt": "Sudoku 0040402310003014"}])
  with pytest.raises(ValueError, match="o.jsonl row 1: not a compact Countdown prompt"):
    cm.measure(other, "chars")
  with pytest.raises(ValueError, match="no generations"):
    cm.measure(tmp_path / "missing.jsonl", "chars")
