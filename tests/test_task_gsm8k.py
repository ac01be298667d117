"""GSM8K: reading the real files, the `####` reference, numeric extraction and scoring."""

import json

import pytest

from rewards.tasks import get_task
from rewards.tasks import gsm8k as G

TASK = get_task("gsm8k")


@pytest.fixture(scope="module")
def test_set(benchmark_data):
  return TASK.examples("test", path=str(benchmark_data / "gsm8k"))


def test_the_default_location_holds_the_1319_test_questions(test_set):
  assert len(test_set) == 1319
  first = TASK.examples("test", limit=1)[0]
  assert first == test_set[0]
  assert first.answer == "18" and first.prompt.startswith("Janet")
  assert first.target.endswith("<answer>18</answer>") and "<<" not in first.target


def test_every_reference_target_scores_correct_in_both_styles(test_set, benchmark_data):
  for e in test_set:
    assert TASK.score(e, e.target) == {"correct": 1.0, "answered": 1.0, "format": 1.0}
  for e in TASK.examples("test", limit=200, style="protocol"):
    assert TASK.score(e, e.target)["correct"] == 1.0 and TASK.format_ok(e.target, style="protocol")


def test_the_two_negative_test_answers_can_be_scored_correct(test_set):
  negative = {e.meta["row"]: e for e in test_set if e.answer.startswith("-")}
  assert {row: e.answer for row, e in negative.items()} == {490: "-10", 1114: "-3"}
  minus3 = negative[1114]
  for text in ("<answer>\\boxed{-3}</answer>", "<answer>-3</answer>",
               "It was -3 degrees Celsius in the morning.", "\\boxed{\u22123}",
               "<reasoning>2 - 8 = -6, -6 + 3 = -3</reasoning><answer>-3 degrees</answer>"):
    assert TASK.score(minus3, text)["correct"] == 1.0, text
  for text in ("<answer>3</answer>", "\\boxed{3}", "it dropped 2-5"):
    assert TASK.score(minus3, text)["correct"] == 0.0, text


def test_thousands_separators_dollars_and_trailing_zeros_are_normalised(test_set):
  lego = test_set[146]  # "#### 2,125"
  assert lego.answer == "2125"
  for text in ("\\boxed{2,125}", "\\boxed{2125}", "<answer>$2,125.00</answer>",
               "\\boxed{2{,}125}", "so he picks up 2,125 blocks", "\\boxed{\\$2125}"):
    assert TASK.score(lego, text)["correct"] == 1.0, text
  for text in ("\\boxed{2,12}", "\\boxed{21,25}", "\\boxed{2126}", "<answer>2.125</answer>"):
    assert TASK.score(lego, text)["correct"] == 0.0, text


def test_the_box_wins_over_the_answer_tag_which_wins_over_the_last_number(test_set):
  janet = test_set[0]
  assert TASK.extract_answer("<answer>17</answer> \\boxed{18} and 19") == "18"
  assert TASK.extract_answer("<answer>18</answer> then 19") == "18"
  assert TASK.extract_answer("9 * 2 = 18 dollars") == "18"
  assert TASK.extract_answer("\\boxed{eighteen} <answer>18</answer>") == "18"
  assert TASK.extract_answer("no digits") is None
  assert TASK.extract_answer("") is None
  scores = TASK.score(janet, "")
  assert scores == {"correct": 0.0, "answered": 0.0, "format": 0.0}


def test_gsm8k_has_no_label_free_verifier(test_set):
  assert TASK.has_verifier is False
  with pytest.raises(NotImplementedError, match="label-free"):
    TASK.verify(test_set[0], test_set[0].target)


def test_train_and_validation_partition_the_train_file():
  train = TASK.examples("train")
  validation = TASK.examples("validation")
  assert len(train) + len(validation) == 7473
  assert 250 < len(validation) < 500
  assert not {e.prompt for e in train} & {e.prompt for e in validation}
  assert all(G.split_of(e.prompt) == "validation" for e in validation)


def test_a_file_path_is_read_whole_whatever_the_split(benchmark_data):
  train_file = str(benchmark_data / "gsm8k" / "train.jsonl")
  assert len(TASK.examples("validation", path=train_file, limit=20)) == 20
  assert TASK.examples("validation", path=train_file, limit=1)[0].meta["row"] == 1


def test_missing_or_malformed_files_raise_value_errors(tmp_path):
  with pytest.raises(ValueError, match="not found"):
    TASK.examples("test", path=str(tmp_path / "nope.jsonl"))
  good = json.dumps({"question": "q", "answer": "a\n#### 5"})
  bad_json = tmp_path / "bad.jsonl"
  bad_json.write_text(good + "\n" + good[:-1] + "\n")
  with pytest.raises(ValueError, match="line 2: invalid JSON"):
    TASK.examples("test", path=str(bad_json))
  no_hashes = tmp_path / "nohash.jsonl"
  no_hashes.write_text(good + "\n" + json.dumps({"question": "q", "answer": "5"}) + "\n")
  with pytest.raises(ValueError, match="row 2: a GSM8K answer has exactly one '####'"):
    TASK.examples("test", path=str(no_hashes))
  not_number = tmp_path / "nan.jsonl"
  not_number.write_text(json.dumps({"question": "q", "answer": "a #### five"}) + "\n")
  with pytest.raises(ValueError, match="not a number"):
    TASK.examples("test", path=str(not_number))
  missing = tmp_path / "missing.jsonl"
  missing.write_text(json.dumps({"question": "q"}) + "\n")
  with pytest.raises(ValueError, match="missing field"):
    TASK.examples("test", path=str(missing))
