"""What a new user meets: every verb resolves shipped model names, a shipped model brings
its own sampler settings, a short run of a shipped config just works, long work shows
progress, and every flag explains itself. (Plots: test_plot.py.)"""

import argparse
import io

import pytest

from mro import cli, config, loading
from mro.progress import Progress
from mro.training.step import lr_schedule
from rewards.tasks import get_task

pytestmark = pytest.mark.integration  # whole workflows: every verb on the shipped models


def run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_sample_resolves_default_with_the_task_and_uses_the_models_own_sampler(capsys):
  ex = get_task("sudoku").examples("test", limit=1)[0]
  code, out, err = run(capsys, "sample", "--model", "default", "--task", "sudoku",
                       "--prompt", ex.prompt)
  assert code == 0, err
  assert get_task("sudoku").format_ok(out.strip(), style="compact")  # the 24-token answer
  assert loading.recorded_sampler_config(
      loading.resolve_model("default", "sudoku")).gen_length == 24


def test_a_shipped_name_without_a_task_asks_for_the_task(capsys):
  code, _, err = run(capsys, "sample", "--model", "default", "--prompt", "1+1=")
  assert code == 2 and "--task" in err


def test_a_short_run_of_the_shipped_tiny_config_just_works(tiny_run):
  workdir, code, _, err = tiny_run  # `mro train --config tiny`, shrunk (conftest.py)
  assert code == 0, err
  assert (workdir / "model" / "sampler.json").is_file()  # the model's own settings
  cfg = config.load_config("tiny", ["train.steps=20"], command="train")
  assert cfg.train.warmup_steps == 30 and cfg.train.effective_warmup == 2  # capped, not refused


@pytest.mark.parametrize("steps", [1, 2])
def test_a_run_of_one_or_two_steps_has_a_schedule(steps):
  cfg = config.load_config("tiny", [f"train.steps={steps}"], command="train")
  schedule = lr_schedule(cfg.train)  # a warmup as long as the run was an optax error
  assert cfg.train.effective_warmup == steps - 1
  assert [float(schedule(i)) for i in range(steps)][-1] == pytest.approx(cfg.train.lr)


def test_progress_prints_plain_lines_when_not_on_a_terminal():
  stream = io.StringIO()
  bar = Progress("arith steps=8", 10, stream=stream, every=0.0)
  bar.update(4, 1.0)
  bar.update(6, 5.0)
  bar.close()
  lines = stream.getvalue().splitlines()
  assert lines[0].startswith("[arith steps=8] 4/10 examples") and "0.2500" in lines[0]
  assert lines[-1].startswith("[arith steps=8] 10/10 examples") and "0.6000" in lines[-1]


def test_training_progress_is_plain_lines_with_the_loss_when_not_on_a_terminal():
  """`mro train` with its output in a file: lines, not a bar's carriage-return updates."""
  stream = io.StringIO()
  bar = Progress("train", 10, stream=stream, every=0.0, unit="steps", initial=6)  # resumed
  bar.update(1, loss="0.4321", tok_s="1,234")
  bar.update(3, loss="0.2100", tok_s="1,300")
  bar.close()
  text = stream.getvalue()
  assert "\r" not in text
  lines = text.splitlines()
  assert lines[0].startswith("[train] 7/10 steps,") and lines[0].endswith(
      ", loss 0.4321, tok_s 1,234")
  assert lines[-1].startswith("[train] 10/10 steps,") and "loss 0.2100" in lines[-1]
  quiet = io.StringIO()
  Progress("train", 10, stream=quiet, every=0.0, enabled=False).update(10, loss="1")
  assert quiet.getvalue() == ""  # train.progress=false


def _actions(parser: argparse.ArgumentParser):
  for action in parser._actions:
    if isinstance(action, argparse._SubParsersAction):
      for name, sub in action.choices.items():
        yield from ((f"{name} {flag}", a) for flag, a in _actions(sub))
    elif not isinstance(action, argparse._HelpAction):
      yield (action.option_strings or [action.dest])[0], action


def test_every_flag_of_every_verb_has_a_help_line_and_search_defaults_are_shown(capsys):
  missing = [flag for flag, action in _actions(cli.build_parser()) if not action.help]
  assert not missing
  with pytest.raises(SystemExit):
    cli.main(["eval", "--help"])
  out = " ".join(capsys.readouterr().out.split())
  for shown in ("(default: 4)", "(default: 16)", "(default: 1.0)", "(default: tv,ppl)"):
    assert shown in out, shown
