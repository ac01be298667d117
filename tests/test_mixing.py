"""Mixed failures: a wrong answer made of parts of two right ones (mro/evaluation/mixing.py)."""

import itertools

import pytest

from mro import paths
from mro.evaluation import mixing
from rewards.tasks import get_task
from rewards.tasks.sudoku import solutions

SEVERAL = "1200340021000000"  # 4 solutions
A = "<think>0100-0093=0007,0030-0007=0023</think><answer>30-(100-93)</answer>"
B = "<think>0093+0030=0123,0123-0100=0023</think><answer>(93+30)-100</answer>"
# character by character from A or B, neither; in tokens one longer than both (A's `-(`
# is one token, this `(1` two)
CHAR_MIX = "<think>0100-0093=0007,0123-0100=0023</think><answer>(93(100-93)</answer>"
SHIPPED = str(paths.MODELS / "default" / "countdown")  # one token per digit and operator


def test_a_sudoku_grid_taking_cells_from_two_solutions_is_mixed():
  s = solutions(SEVERAL)
  assert len(s) == 4
  mixed = s[0][:8] + s[1][8:]
  assert mixed not in s and all(mixed[i] in (s[0][i], s[1][i]) for i in range(16))
  assert mixing.sudoku_kind(SEVERAL, mixed) == "mixed"
  assert mixing.sudoku_kind(SEVERAL, s[2]) == "solved"
  assert mixing.sudoku_kind(SEVERAL, None) == "no_answer"
  wrong = mixed[:15] + next(d for d in "1234" if d not in {x[15] for x in s})
  assert mixing.sudoku_kind(SEVERAL, wrong) == "other"  # a digit no solution has there
  given_changed = "2" + mixed[1:]
  assert mixing.sudoku_kind(SEVERAL, given_changed) == "other"


def test_a_wrong_grid_of_a_unique_puzzle_is_never_mixed():
  ex = get_task("sudoku").examples("test", limit=1)[0]
  grid = ex.answer
  empty = [i for i, d in enumerate(ex.meta["puzzle"]) if d == "0"]
  i, j = next((i, j) for i in empty for j in empty if i < j and grid[i] != grid[j])
  bad = list(grid)
  bad[i], bad[j] = bad[j], bad[i]
  assert mixing.sudoku_kind(ex.meta["puzzle"], "".join(bad)) == "other"


def test_every_countdown_answer_the_task_shows_is_among_the_enumerated_solutions():
  task = get_task("countdown")
  for ex in task.examples("test", limit=50):
    trees = mixing.countdown_solutions(tuple(ex.meta["numbers"]), ex.meta["target"])
    assert ex.target in {mixing.compact_text(t, task.prompt_width + 1) for t in trees}
    assert all(mixing.countdown_kind(ex.meta["numbers"], ex.meta["target"],
                                     mixing.compact_text(t, 4))["kind"] == "solved"
               for t in trees)
  assert {mixing.compact_text(t, 4) for t in mixing.countdown_solutions((30, 100, 93), 23)} \
      >= {A, B}


@pytest.mark.parametrize("text, kind, crossover", [
    # think: A's first step, B's second; the answer cut short
    ("<think>0100-0093=0007,0123-0100=0023</think><answer>(93+</answer>", "mixed", False),
    # character by character from A or B (same length), neither of them: a token-level mix
    ("<think>0100-0093=0007,0123-0100=0023</think><answer>(93(100-93)</answer>", "mixed",
     True),
    ("<think>0100-0093=0007,0030-0007=0023</think><answer>30-(100-</answer>", "one", False),
    ("<think>0100-0093=0007,0007*0030=0210</think><answer>7*30</answer>", "other", False),
    ("<answer></answer>", "empty", False),
    # A's length, but a digit neither A nor any other answer has there
    ("<think>0100-0093=0007,0030-0007=0023</think><answer>30-(100-99)</answer>", "other",
     False),
    (B, "solved", False),
])
def test_countdown_failures_are_told_apart_by_where_their_parts_come_from(text, kind,
                                                                         crossover):
  got = mixing.countdown_kind([30, 100, 93], 23, text)
  assert (got["kind"], got["crossover"]) == (kind, crossover)
  assert got["solutions"] == 8


def test_parts_are_compared_as_a_set_each_answer_having_the_parts_it_contains():
  assert mixing.compare_parts({1, 2}, [{1, 2, 3}, {4}])["kind"] == "valid"
  assert mixing.compare_parts({1, 2}, [{1, 3}, {2, 3}])["kind"] == "mix"
  assert mixing.compare_parts({1, 2, 3}, [{1}, {2}, {3}])["kind"] == "mix3"
  assert mixing.compare_parts({1, 5}, [{1, 3}, {2, 3}])["kind"] == "stray"
  assert mixing.compare_parts(set(), [{1}]) is None and mixing.compare_parts({1}, []) is None


def test_a_crossover_is_counted_in_the_positions_of_the_unit_asked_for():
  assert mixing.countdown_kind([30, 100, 93], 23, CHAR_MIX)["crossover"]
  tokens = mixing.countdown_kind([30, 100, 93], 23, CHAR_MIX, unit=SHIPPED)
  assert tokens["kind"] == "mixed" and not tokens["crossover"]
  assert mixing.countdown_position_kind((30, 100, 93), 23, CHAR_MIX)["kind"] == "mix"
  assert mixing.countdown_position_kind((30, 100, 93), 23, CHAR_MIX, unit=SHIPPED)[
      "kind"] == "length"


@pytest.mark.parametrize("unit", ["chars", SHIPPED], ids=["chars", "tokens"])
def test_a_crossover_is_exactly_a_wrong_text_the_positional_measure_calls_a_mix(unit):
  texts = [CHAR_MIX, A.replace("-93)", "-94)"), A.replace("30-(", "93+("), A[:-12],
           "<think>0100-0093=0007,0123-0100=0023</think><answer>303+30)-100</answer>"]
  for text in texts:
    crossover = mixing.countdown_kind([30, 100, 93], 23, text, unit=unit)["crossover"]
    position = mixing.countdown_position_kind((30, 100, 93), 23, text, unit=unit)
    assert crossover == (position["kind"] == "mix")
  assert any(mixing.countdown_kind([30, 100, 93], 23, t, unit=unit)["crossover"]
             for t in texts)


def test_tokens_and_characters_agree_where_every_token_is_one_character():
  # think parts: one token per digit, operator, comma and `=`
  thinks = sorted({mixing.think_span(r) for r in mixing.renderings((30, 100, 93), 23)})
  outputs = set(thinks)
  for a, b, c in itertools.permutations(thinks, 3):  # one, two or three answers' tokens
    if len(a) == len(b) == len(c):
      outputs |= {a[:i] + b[i:j] + c[j:] for i in range(len(a)) for j in range(i, len(a))}
  outputs |= {t[:k] + d + t[k + 1:] for t in thinks for k in range(len(t)) if t[k].isdigit()
              for d in "0123456789"}
  outputs = sorted(outputs)
  split = mixing.splitter(SHIPPED)[0]
  assert all(len(split(o)) == len(o) for o in outputs)
  chars = [mixing.mix_kind(o, thinks, "chars") for o in outputs]
  assert chars == [mixing.mix_kind(o, thinks, SHIPPED) for o in outputs]
  assert {c["kind"] for c in chars} == {"valid", "mix", "mix3", "stray"}


def test_the_enumeration_refuses_too_many_numbers():
  with pytest.raises(ValueError, match="1 to 4 numbers"):
    mixing.countdown_solutions((1, 2, 3, 4, 5), 15)


def test_summarize_counts_kinds_over_all_problems_and_those_with_several_answers():
  task = get_task("sudoku")
  s = solutions(SEVERAL)
  unique = task.examples("test", limit=1)[0]
  examples = [task._example("a", SEVERAL, s[0], "compact"), unique]
  gens = [{"index": 0, "output": f"<answer>{s[0][:8] + s[1][8:]}</answer>"},
          {"index": 0, "output": f"<answer>{s[3]}</answer>"},
          {"index": 1, "output": "<answer>1111222233334444</answer>"},
          {"index": 1, "output": "no answer"}]
  counts = mixing.summarize(task, examples, gens)
  assert (counts["n"], counts["wrong"]) == (4, 3)
  assert counts["kinds"] == {"mixed": 1, "other": 1, "no_answer": 1}
  assert counts["several"] == {"n": 2, "wrong": 1, "kinds": {"mixed": 1}}
  assert mixing.failure_kind(get_task("arith"), None, "") is None


def test_the_bench_table_counts_mixed_failures_per_setting_from_an_eval_file(tmp_path):
  import json

  from experiments.bench import mixing as bench
  s = solutions(SEVERAL)
  unique = get_task("sudoku").examples("test", limit=1)[0]
  data = tmp_path / "p.csv"
  data.write_text(f"Puzzle,Solution\n{SEVERAL},{s[0]}\n{unique.meta['puzzle']},"
                  f"{unique.answer}\n")
  base = {"task": "sudoku", "model": "m", "data": str(data), "split": "test", "limit": None,
          "data_seed": 0, "style": "compact", "search": None, "sampler": {}, "n": 2}
  records = [{**base, "setting_id": "a", "steps": 6}, {**base, "setting_id": "b", "steps": 3}]
  outputs = {"a": [s[0][:8] + s[1][8:], unique.answer], "b": [s[1], "1111222233334444"]}
  (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  (tmp_path / "r.generations.jsonl").write_text("".join(
      json.dumps({"setting_id": k, "index": i, "output": f"<answer>{o}</answer>"}) + "\n"
      for k, outs in outputs.items() for i, o in enumerate(outs)))
  lines = bench.table(tmp_path / "r.jsonl").splitlines()
  assert lines[2] == ("| sudoku | m | plain sampler | 6 | 2 | 1 | 1 (100%) | mixed 1 | 1 | 1 | "
                      "1 (100%) | - |")
  assert lines[3] == ("| sudoku | m | plain sampler | 3 | 2 | 1 | 0 (0%) | other 1 | 1 | 0 | - "
                      "| - |")
