"""What a new user meets: every verb resolves shipped model names, a shipped model brings
its own sampler settings, a short run of a shipped config just works, plots keep different
settings apart, long work shows progress, and every flag explains itself."""

import argparse
import io

import pytest

from mro import cli, loading
from mro.evaluation import plot
from mro.progress import Progress
from rewards.tasks import get_task


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


def test_a_short_run_of_the_shipped_tiny_config_just_works(tmp_path, capsys):
  code, out, err = run(capsys, "train", "--config", "tiny", "--workdir", str(tmp_path / "wd"),
                       "--set", "train.steps=20", "--set", "data.train_size=300",
                       "--set", "train.progress=false")
  assert code == 0, err  # warmup_steps=30 >= 20 was refused before
  assert (tmp_path / "wd" / "model" / "sampler.json").is_file()  # the model's own settings


def record(**kw):
  base = {"model": "m", "task": "sudoku", "protocol": "compact", "steps": 24, "accuracy": 0.5,
          "data": None, "search": None, "rewards": None,
          "sampler": {"gen_length": 24, "block_length": 24, "temperature": 0.0,
                      "remasking": "low_confidence", "threshold": None, "cfg_scale": 0.0}}
  return {**base, **kw}


def test_plot_curves_keep_search_data_and_sampler_settings_apart():
  search = {"method": "mro", "k": 4, "n_live": 1, "group_steps": 3, "temperature": 1.0,
            "select": "argmax"}
  rewards = {"spec": "tv,ppl", "use": ["tv", "ppl"], "quality_source": "vote"}
  rows = [record(), record(steps=6), record(steps=6, search=search, rewards=rewards),
          record(data="a/sudoku_12.csv"), record(data="b/sudoku_8.csv"),
          record(sampler={**record()["sampler"], "block_length": 8})]
  lines = plot.curves(rows)
  assert len(lines) == 5  # only the two plain rows on the default data share a curve
  assert any(len(points) == 2 for points in lines.values())
  labels = " | ".join(lines)
  assert "MRO search k=4 w=3 argmax (tv+ppl)" in labels and "sudoku_12.csv" in labels
  assert "block_length=8" in labels


def test_plot_x_axes_put_thresholds_and_steps_at_their_cost(tmp_path):
  thr = {**record()["sampler"], "threshold": 0.9}
  rows = [record(nfe_per_prompt=24, seconds=20.0),
          record(steps=12, nfe_per_prompt=12, seconds=10.0, accuracy=0.4),
          record(sampler=thr, nfe_per_prompt=3.5, seconds=4.0, accuracy=0.3),
          record(sampler={**thr, "threshold": 0.7}, nfe_per_prompt=2.0, seconds=3.0,
                 accuracy=0.2)]
  by_nfe = plot.curves(rows, x="nfe")
  assert sorted(by_nfe.values()) == [[(2.0, 0.2), (3.5, 0.3)], [(12.0, 0.4), (24.0, 0.5)]]
  assert sorted(plot.curves(rows, x="seconds").values())[0] == [(3.0, 0.2), (4.0, 0.3)]
  assert plot.plot_results(rows, tmp_path / "nfe.png", x="nfe").stat().st_size > 0
  with pytest.raises(ValueError, match="x must be one of"):
    plot.curves(rows, x="flops")


def test_progress_prints_plain_lines_when_not_on_a_terminal():
  stream = io.StringIO()
  bar = Progress("arith steps=8", 10, stream=stream, every=0.0)
  bar.update(4, 1.0)
  bar.update(6, 5.0)
  bar.close()
  lines = stream.getvalue().splitlines()
  assert lines[0].startswith("[arith steps=8] 4/10 examples") and "0.2500" in lines[0]
  assert lines[-1].startswith("[arith steps=8] 10/10 examples") and "0.6000" in lines[-1]


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


def test_curve_labels_name_verification_and_correction_and_share_their_common_prefix():
  search = {"method": "mro", "k": 4, "n_live": 1, "group_steps": 3, "temperature": 1.0,
            "select": "argmax"}
  tv_all = {"spec": "tv,ppl", "use": ["tv", "ppl"], "quality_source": "vote",
            "n_verify": "all"}
  corrected = {**record()["sampler"], "correct_below": 0.5, "correct_rows": None}
  rows = [record(search=search, rewards={**tv_all, "n_verify": 1}),
          record(search=search, rewards=tv_all), record(sampler=corrected)]
  labels = list(plot.curves(rows))
  assert len(labels) == 3 and "tv over all positions" in labels[1]
  assert labels[2].endswith("plain sampler, token correction < 0.5")
  shared, short = plot.split_labels(labels)
  assert shared == "m · sudoku · compact" and short[2] == "plain sampler, token correction < 0.5"
