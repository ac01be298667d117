"""Error messages stay bounded whatever value they quote (issue 29): every message of the
project quotes a value through mro/messages.py (never `!r`), a 10 MB field of a data file
comes back as its first characters and its length, and the `mro` command caps a whole
message too."""

import ast
import json
from pathlib import Path

import pytest

from mro import cli
from mro.messages import MESSAGE_LIMIT, QUOTE_LIMIT, quoted
from rewards.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "rewards", "mro")
HUGE = 10_000_000  # a 10 MB field


def repr_quotes_in_raised_messages() -> list[str]:
  """`path:line: expr` for every `{expr!r}` in the message of a `raise` of the project."""
  found = []
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
          found += [f"{path.relative_to(ROOT)}:{sub.lineno}: {ast.unparse(sub.value)}"
                    for sub in ast.walk(node.exc)
                    if isinstance(sub, ast.FormattedValue) and sub.conversion == ord("r")]
  return found


def test_no_error_message_of_the_project_quotes_a_value_with_repr():
  assert repr_quotes_in_raised_messages() == [], "quote values with mro.messages.quoted"


def test_quoted_keeps_a_short_value_and_cuts_a_long_one_saying_its_length():
  assert quoted("L/4") == "'L/4'"
  long = quoted("x" * HUGE)
  assert long.startswith("'xxx") and long.endswith(f"... ({HUGE + 2} characters)")
  assert len(long) < QUOTE_LIMIT + 40


def bounded_error(excinfo, *names) -> str:
  message = str(excinfo.value)
  assert len(message) < 1000, message[:300]
  for name in names:
    assert name in message, message[:300]
  return message


def test_a_10mb_gsm8k_answer_gives_a_short_message_naming_the_row(tmp_path):
  data = tmp_path / "gsm.jsonl"
  data.write_text(json.dumps({"question": "q?", "answer": "so #### " + "x" * HUGE}) + "\n")
  with pytest.raises(ValueError) as excinfo:
    get_task("gsm8k").examples("test", path=str(data))
  bounded_error(excinfo, f"{data} row 1", "is not a number", f"({HUGE + 2} characters)")


@pytest.mark.parametrize("task, name, text, why", [
    ("countdown", "cd.jsonl", json.dumps({"input": "1,x" + "y" * HUGE, "output": "6"}) + "\n",
     "line 1: 'input' must be comma-separated"),
    ("countdown", "cd.jsonl", json.dumps({"input": "1,2,3", "output": "z" * HUGE}) + "\n",
     "line 1: 'output' must be an integer"),
    ("sudoku", "s.csv", "Puzzle,Solution\n\n" + "1" * 100_000 + ",2\n",
     "line 3: a puzzle is 16 characters"),
    ("sudoku", "s.csv", "Puzzle,Solution\n" + "1" * HUGE + ",2\n",
     "line 2: not a CSV row (field larger than field limit"),  # the csv module's limit
])
def test_a_huge_field_of_a_data_file_gives_a_short_message_naming_the_line(
    tmp_path, task, name, text, why):
  data = tmp_path / name
  data.write_text(text)
  with pytest.raises(ValueError) as excinfo:
    get_task(task).examples("test", path=str(data))
  bounded_error(excinfo, f"{data} {why}")


def test_a_10mb_unknown_config_key_gives_a_short_message():
  from mro import config

  with pytest.raises(ValueError) as excinfo:
    config.from_dict({"train": {"k" * HUGE: 1}})
  bounded_error(excinfo, "unknown config key(s)", "characters)")


def test_the_mro_command_caps_any_error_message(monkeypatch, tmp_path, capsys):
  def huge_error(args):
    raise ValueError("a message quoting " + "v" * HUGE)

  monkeypatch.setattr(cli, "cmd_plot", huge_error)
  code = cli.main(["plot", str(tmp_path / "r.jsonl")])
  err = capsys.readouterr().err
  assert code == 2 and err.startswith("mro plot: error: a message quoting vvv")
  assert len(err) < MESSAGE_LIMIT + 100 and f"({HUGE + 18} characters)" in err
