"""`mro eval` in-process on the tiny trained workdir: table, files, its --plot, and bad
input as exit code 2 with the problem named, before anything is compiled. (`mro plot`:
test_plot.py.)"""

import json

import pytest

import mro.sampling.sampler as sampler
from mro import loading
from mro import cli
from tiny_models import CLI_EVAL_ARGS
from mro.evaluation import runner as evaluate

pytestmark = pytest.mark.integration  # whole workflows: `mro eval` on a trained workdir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return tiny_run[0]


def run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


@pytest.fixture
def no_compile(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("reached the compiled sampler")

  monkeypatch.setattr(sampler, "generate_compiled", fail)


def test_eval_prints_a_table_row_per_steps_value(cli_evaluated):
  code, out, err, _, _ = cli_evaluated
  assert code == 0, err
  lines = out.splitlines()
  assert lines[0].split()[:6] == ["task", "protocol", "search", "steps", "n", "accuracy"]
  assert "digit_accuracy" in lines[0] and "tok/s" in lines[0]
  rows = [line.split() for line in lines[1:3]]
  assert [r[:5] for r in rows] == [["arith", "compact", "-", "8", "5"],
                                   ["arith", "compact", "-", "4", "5"]]
  assert "steps=8" in err and "steps=4" in err  # progress, one line per setting


def test_eval_appends_results_and_generations_and_draws_the_plot(cli_evaluated, workdir):
  code, out, _, results, png = cli_evaluated
  assert code == 0
  records = [json.loads(x) for x in results.read_text().splitlines()]
  assert [r["steps"] for r in records] == [8, 4]
  assert records[0]["model"] == str(workdir) and records[0]["sampler"]["gen_length"] == 32
  gens = evaluate.generations_path(results).read_text().splitlines()
  assert len(gens) == 5 * 2
  assert png.read_bytes().startswith(PNG_SIGNATURE) and png.stat().st_size > 0
  assert f"plot written to {png}" in out and f"2 setting(s) appended to {results}" in out


def test_a_rerun_that_skips_every_setting_says_nothing_was_appended(cli_evaluated, workdir,
                                                                    capsys, no_compile):
  _, _, _, results, _ = cli_evaluated
  before = results.read_text()
  code, out, err = run(capsys, "eval", "--model", str(workdir), *CLI_EVAL_ARGS, "--out",
                       str(results))
  assert code == 0, err
  assert "appended to" not in out and f"nothing appended: every setting was already in " \
      f"{results}" in out
  assert results.read_text() == before


def bad_data_file(tmp_path):
  path = tmp_path / "countdown.jsonl"
  path.write_text('{"input": "30,100,93", "output": "23"}\n{"input": "1,2,3", "output": \n')
  return path


@pytest.mark.parametrize("argv, names", [
    (["--task", "chess"], ["unknown task 'chess'", "sudoku"]),
    (["--task", "arith", "--protocol", "d2"], ["unknown protocol 'd2'", "compact"]),
    (["--task", "arith", "--limit", "0"], ["limit", "0"]),
    (["--task", "sudoku", "--gen-length", "24", "--block-length", "8", "--steps", "5"],
     ["steps=5", "number of blocks"]),
    (["--task", "sudoku", "--steps", "L/5"], ["L/5", "not divisible by 5"]),
    (["--task", "sudoku", "--steps", "4,,8"], ["comma-separated"]),
    (["--task", "countdown", "--data", "MISSING"], ["not found", "missing.jsonl"]),
    (["--task", "countdown", "--data", "BAD"], ["countdown.jsonl line 2", "invalid JSON"]),
    (["--task", "arith", "--plot", "acc.pdf"], ["--plot", ".png"]),
])
def test_eval_with_bad_input_exits_2_naming_the_problem_before_compiling(
    workdir, tmp_path, capsys, no_compile, argv, names):
  argv = [str(tmp_path / "missing.jsonl") if a == "MISSING" else
          str(bad_data_file(tmp_path)) if a == "BAD" else a for a in argv]
  code, out, err = run(capsys, "eval", "--model", str(workdir), *argv)
  assert code == 2 and out == "", err
  assert err.startswith("mro eval: error:") and "Traceback" not in err
  for name in names:
    assert name in err, err


@pytest.mark.parametrize("argv, names", [
    (["--out", "acc.png", "--plot", "./acc.png"], ["--out and --plot", "same file"]),
    (["--out", "acc.png", "--plot", "ABS"], ["--out and --plot", "same file"]),
    (["--data", "acc.png", "--out", "acc.png"], ["--data and --out", "same file"]),
])
def test_eval_refuses_two_options_naming_one_file_before_anything_is_written(
    tmp_path, capsys, monkeypatch, no_compile, argv, names):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "acc.png").write_text('{"setting_id": "kept"}\n')  # results already saved
  argv = [str(tmp_path / "acc.png") if a == "ABS" else a for a in argv]
  code, out, err = run(capsys, "eval", "--model", str(tmp_path / "nowhere"),
                       "--task", "arith", *argv)
  assert code == 2 and out == "", err
  assert "Traceback" not in err and all(name in err for name in names), err
  assert (tmp_path / "acc.png").read_text() == '{"setting_id": "kept"}\n'


def test_plot_refuses_to_draw_over_its_own_results_file(tmp_path, capsys):
  results = tmp_path / "res.png"
  results.write_text('{"setting_id": "kept"}\n')
  code, _, err = run(capsys, "plot", str(results), "--out", str(results))
  assert code == 2 and "the results file and --out name the same file" in err, err
  assert results.read_text() == '{"setting_id": "kept"}\n'


def test_eval_of_a_task_without_a_shipped_default_model_lists_what_exists(
    tmp_path, capsys, monkeypatch, no_compile):
  monkeypatch.setattr(loading, "MODELS_DIR", tmp_path)
  (tmp_path / "default" / "sudoku").mkdir(parents=True)
  (tmp_path / "default" / "sudoku" / "config.json").write_text("{}")
  code, out, err = run(capsys, "eval", "--task", "arith", "--steps", "8")
  assert code == 2 and "no shipped 'default' model for task 'arith'" in err
  assert "models: sudoku" in err


def test_eval_of_a_missing_model_dir_exits_2(tmp_path, capsys, no_compile):
  code, _, err = run(capsys, "eval", "--model", str(tmp_path / "nowhere"), "--task", "arith")
  assert code == 2 and "does not exist" in err


def test_a_misspelt_shipped_name_is_answered_with_the_shipped_names(capsys, no_compile):
  code, _, err = run(capsys, "eval", "--model", "defualt", "--task", "sudoku")
  assert code == 2 and "did you mean 'default'?" in err
  assert "default, default-mro, default-scorer" in err


def test_eval_help_explains_step_fractions_and_lists_the_protocols(capsys):
  with pytest.raises(SystemExit) as done:
    cli.main(["eval", "--help"])
  out = capsys.readouterr().out
  assert done.value.code == 0
  assert "L/2" in out and "GEN_LENGTH / BLOCK_LENGTH blocks" in out
  for name in ("compact", "llada", "d1", "mro"):
    assert f"\n  {name} " in out


def test_fast_resolves_the_measured_setting_under_explicit_options():
  from mro.evaluation.settings import EvalConfig
  from mro.sampling.schedule import FAST

  fast = EvalConfig.build("sudoku", fast=True).sampler_configs()[0]
  assert (fast.threshold, fast.cache, fast.factor) == (
      FAST["threshold"], FAST["cache"], FAST["factor"]) == (0.99, "none", None)
  assert fast.gen_length == EvalConfig.build("sudoku").sampler_configs()[0].gen_length
  mixed = EvalConfig.build("sudoku", fast=True, cache="dual", threshold=0.9)
  assert (mixed.sampler_configs()[0].cache, mixed.sampler_configs()[0].threshold) == (
      "dual", 0.9)
  plain = EvalConfig.build("sudoku", threshold="none").sampler_configs()[0]
  assert plain.threshold is None and plain.cache == "none" and not plain.fixed_steps


@pytest.mark.parametrize("task", ["sudoku", "countdown", "arith"])
def test_the_shipped_tasks_commit_by_confidence_within_the_steps_unless_a_rule_is_named(task):
  """compact's measured default (docs/sampling.md): threshold 0.999 kept to the steps; a
  named rule or `none` replaces it whole, and the cascade's stages are its rules."""
  from mro.evaluation.settings import EvalConfig

  def sampler(**options):
    return EvalConfig.build(task, steps="L/2", **options).sampler_configs()[0]

  default = sampler()
  assert (default.threshold, default.fixed_steps, default.factor) == (0.999, True, None)
  assert len(EvalConfig.build(task, steps="L,L/2,L/4").sampler_configs()) == 3
  assert (sampler(fixed_steps=True).threshold, sampler(fixed_steps=True).fixed_steps) == (
      0.999, True)
  plain = sampler(threshold="none")
  assert (plain.threshold, plain.fixed_steps, plain.factor) == (None, False, None)
  unbounded = EvalConfig.build(task, threshold=0.99).sampler_configs()[0]
  assert (unbounded.threshold, unbounded.fixed_steps) == (0.99, False)
  assert (sampler(threshold=0.9, fixed_steps=True).threshold,
          sampler(threshold=0.9, fixed_steps=True).fixed_steps) == (0.9, True)
  factor = EvalConfig.build(task, factor=1.0).sampler_configs()[0]
  assert (factor.factor, factor.threshold, factor.fixed_steps) == (1.0, None, False)
  corrected = sampler(correct_below=0.5)
  assert (corrected.correct_below, corrected.threshold, corrected.fixed_steps) == (
      0.5, None, False)
  fast = EvalConfig.build(task, fast=True).sampler_configs()[0]
  assert (fast.threshold, fast.fixed_steps) == (0.99, False)
  searched = EvalConfig.build(task, search="mro", steps="L/2")
  assert searched.sampler_configs()[0] == default
  cascade = EvalConfig.build(task, search="cascade", steps="L/2")
  assert (cascade.sampler.threshold, cascade.sampler.fixed_steps) == (None, False)
  assert cascade.sampler_configs()[0] == EvalConfig(task, steps="L/2", cascade=cascade.cascade
                                                    ).sampler_configs()[0]
  assert sampler(rule=False) == plain
  with pytest.raises(ValueError, match="fixed_steps bounds an adaptive rule"):
    sampler(threshold="none", fixed_steps=True)


def test_other_protocols_and_tasks_keep_the_fixed_schedule():
  from mro.evaluation.protocols import Protocol, get_protocol
  from mro.evaluation.settings import EvalConfig

  for protocol, task in [("compact", "gsm8k"), ("compact", "math500"), ("mro", "countdown"),
                         ("d1", "sudoku"), ("llada", "arith")]:
    scfg = EvalConfig.build(task, protocol).sampler_configs()[0]
    assert (scfg.threshold, scfg.fixed_steps) == (None, False), (protocol, task)
    assert get_protocol(protocol, task).rule == {}
  assert get_protocol("compact", "sudoku").rule == {"threshold": 0.999, "fixed_steps": True}
  with pytest.raises(ValueError, match="threshold must be None or in"):
    Protocol("bad", threshold=1.5)
  with pytest.raises(ValueError, match="set threshold too"):
    Protocol("bad", fixed_steps=True)


@pytest.mark.parametrize("argv, field, value", [
    (["--threshold", "none"], "threshold", None),
    (["--threshold", "None"], "threshold", None),
    (["--threshold", "0.9"], "threshold", 0.9),
    (["--factor", "none"], "factor", None),
    (["--correct-below", "0.5"], "correct_below", 0.5),
])
def test_optional_numbers_take_none_on_the_command_line(argv, field, value):
  from mro import options
  from mro.sampling.schedule import SamplerConfig

  args = cli.build_parser().parse_args(["eval", "--task", "sudoku", *argv])
  assert options.overrides(args, SamplerConfig) == {field: value}
  assert options.overrides({"threshold": "none"}, SamplerConfig) == {"threshold": None}


def test_a_threshold_that_is_no_number_exits_2_naming_it(capsys, no_compile):
  with pytest.raises(SystemExit) as done:
    cli.main(["eval", "--task", "sudoku", "--threshold", "high"])
  err = capsys.readouterr().err
  assert done.value.code == 2 and "--threshold" in err and "expected a number or 'none'" in err


def test_fast_eval_records_the_resolved_options_and_fewer_forward_passes(
    workdir, tmp_path, capsys):
  out = tmp_path / "fast.jsonl"
  code, _, err = run(capsys, "eval", "--model", str(workdir), "--task", "arith", "--limit",
                     "4", "--gen-length", "16", "--steps", "L", "--batch-size", "4",
                     "--fast", "--cache", "dual", "--out", str(out))
  assert code == 0, err
  record = json.loads(out.read_text().splitlines()[0])
  assert record["sampler"]["threshold"] == 0.99 and record["sampler"]["cache"] == "dual"
  assert 1 <= record["nfe_per_prompt"] <= 16


def test_search_defaults_are_the_measured_two_points_and_the_paper_protocol_keeps_four():
  from mro.evaluation.settings import EvalConfig
  from mro.method.search.settings import SearchConfig

  scfg = EvalConfig.build("sudoku", steps="L/4").sampler_configs()[0]
  compact = EvalConfig.build("sudoku", search="mro", steps="L/4")
  assert compact.search.resolve(scfg).group_steps == 3  # 6 steps, 2 search points
  assert (compact.search.k, compact.search.temperature) == (4, 1.0)
  assert compact.resolved_rewards().use == ("tv", "ppl")
  paper = EvalConfig.build("sudoku", "mro", search="mro", steps="12")
  assert paper.search.resolve(paper.sampler_configs()[0]).group_steps == 3  # 12 / 4
  assert paper.search.temperature == 0.25
  assert SearchConfig(group_steps=2).resolve(scfg).group_steps == 2  # explicit w wins
  with pytest.raises(ValueError, match="search_points"):
    SearchConfig(search_points=0)
