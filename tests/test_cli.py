"""The `mro` command: `train` and `sample` in-process, bad input as exit code 2, help."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mro import cli

pytestmark = pytest.mark.integration  # whole workflows: `mro` verbs end to end, a training run

PROMPTS = ["12+34=", "5*6=", "100+2="]
FAST = ["--gen-length", "16", "--steps", "8", "--block-length", "8"]


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return tiny_run[0]


def sample(capsys, *argv):
  code = cli.main(["sample", *argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_train_trains_to_the_last_step_and_says_where_the_model_is(tiny_run, tiny_train_sets):
  workdir, code, out, err = tiny_run
  assert code == 0, err
  steps = next(s for s in tiny_train_sets if s.startswith("train.steps=")).split("=")[1]
  assert f"trained to step {steps} " in out and f"{workdir}/model" in out
  assert (workdir / "model" / "model.safetensors").is_file()
  assert not (workdir / "run.lock").exists()  # the workdir's lock went with the run


def test_train_on_a_finished_workdir_changes_nothing_and_reports_the_last_step(
    workdir, tiny_train_sets, tmp_path, capsys):
  copy = tmp_path / "wd"
  shutil.copytree(workdir, copy)
  argv = ["train", "--config", "tiny", "--workdir", str(copy)]
  for item in tiny_train_sets:
    argv += ["--set", item]
  code = cli.main(argv)
  out, err = capsys.readouterr()
  assert code == 0, err
  assert (copy / "metrics.jsonl").read_text() == (workdir / "metrics.jsonl").read_text()
  assert (copy / "model" / "model.safetensors").read_bytes() == \
      (workdir / "model" / "model.safetensors").read_bytes()
  last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
  assert f"trained to step {last['step']} (loss {last['loss']:.4f})" in out, out


def test_sample_prints_one_line_per_prompt(workdir, capsys):
  argv = ["--model", str(workdir), *FAST]
  for p in PROMPTS:
    argv += ["--prompt", p]
  code, out, err = sample(capsys, *argv)
  assert code == 0, err
  assert len(out.splitlines()) == len(PROMPTS), out


def test_sample_with_echo_prints_each_prompt_before_its_output(workdir, capsys):
  argv = ["--model", str(workdir / "model"), "--echo", *FAST]
  for p in PROMPTS:
    argv += ["--prompt", p]
  code, out, err = sample(capsys, *argv)
  assert code == 0, err
  lines = out.splitlines()
  assert len(lines) == len(PROMPTS)
  for line, p in zip(lines, PROMPTS):
    assert line.startswith(p)


def test_a_workdir_and_its_model_dir_sample_the_same_text(workdir, capsys):
  outs = []
  for model in (workdir, workdir / "model"):
    code, out, err = sample(capsys, "--model", str(model), "--prompt", PROMPTS[0], *FAST)
    assert code == 0, err
    outs.append(out)
  assert outs[0] == outs[1]


@pytest.mark.parametrize("argv, names", [
    (["--gen-length", "30", "--block-length", "32"], ["gen_length=30", "block_length=32"]),
    (["--gen-length", "16", "--steps", "32"], ["steps=32", "gen_length=16"]),
    (["--gen-length", "32", "--block-length", "8", "--steps", "6"], ["steps=6"]),
    (["--threshold", "1.5"], ["threshold", "1.5"]),
])
def test_sample_with_inconsistent_sampler_options_exits_2_naming_them(workdir, capsys, argv,
                                                                    names):
  code, out, err = sample(capsys, "--model", str(workdir), "--prompt", "1+1=", *argv)
  assert code == 2 and out == ""
  assert err.startswith("mro sample: error:") and "Traceback" not in err
  for name in names:
    assert name in err, err


def test_sample_from_a_workdir_whose_config_no_longer_fits_its_checkpoints_moves_nothing(
    workdir, tmp_path, capsys):
  wd = tmp_path / "wd"
  shutil.copytree(workdir, wd)
  shutil.rmtree(wd / "model")  # read the checkpoints, not the export
  cfg = json.loads((wd / "config.json").read_text())
  cfg["model"]["mlp_hidden"] *= 2  # config.json edited since: other shapes
  (wd / "config.json").write_text(json.dumps(cfg))
  before = sorted(p.name for p in (wd / "checkpoints").iterdir())
  code, out, err = sample(capsys, "--model", str(wd), "--prompt", PROMPTS[0], *FAST)
  assert code == 2 and out == "" and "Traceback" not in err
  assert "does not restore" in err and "left in place" in err, err
  assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == before


def test_sample_from_a_missing_model_dir_exits_2(tmp_path, capsys):
  missing = tmp_path / "nowhere"
  code, _, err = sample(capsys, "--model", str(missing), "--prompt", "1+1=")
  assert code == 2 and str(missing) in err and "does not exist" in err


def test_sample_from_a_model_dir_without_tokenizer_exits_2(fixture_dir, capsys):
  code, _, err = sample(capsys, "--model", str(fixture_dir), "--prompt", "1+1=")
  assert code == 2 and "no tokenizer" in err


def test_sample_with_an_empty_prompt_exits_2(workdir, capsys):
  code, _, err = sample(capsys, "--model", str(workdir), "--prompt", "", *FAST)
  assert code == 2 and "prompt" in err


def train(capsys, tmp_path, *argv):
  code = cli.main(["train", "--workdir", str(tmp_path / "wd"), *argv])
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize("argv, names", [
    (["--config", "no_such_config"], ["'no_such_config'", "tiny"]),
    (["--config", "tiny", "--set", "train.stepz=3"], ["train.stepz"]),
    (["--config", "tiny", "--set", "train.steps=many"], ["train.steps", "'many'"]),
    (["--config", "tiny", "--set", "sampler.gen_length=30"], ["gen_length=30"]),
    (["--config", "tiny", "--set", "nokey"], ["section.key=value"]),
])
def test_train_with_bad_config_input_exits_2_naming_the_problem(tmp_path, capsys, argv, names):
  code, out, err = train(capsys, tmp_path, *argv)
  assert code == 2 and out == ""
  assert err.startswith("mro train: error:") and "Traceback" not in err
  for name in names:
    assert name in err, err
  assert not (tmp_path / "wd").exists()  # refused before anything was written


def test_train_on_a_workdir_of_another_config_exits_2_listing_the_differences(
    workdir, tiny_train_sets, capsys):
  argv = ["train", "--config", "tiny", "--workdir", str(workdir)]
  for item in tiny_train_sets + ["train.lr=0.5"]:
    argv += ["--set", item]
  code = cli.main(argv)
  _, err = capsys.readouterr()
  assert code == 2 and "train.lr: 0.001 (workdir) vs 0.5 (now)" in err


def test_sample_help_explains_how_gen_length_block_length_and_steps_relate(capsys):
  with pytest.raises(SystemExit) as done:
    cli.main(["sample", "--help"])
  out = capsys.readouterr().out
  assert done.value.code == 0
  for flag in ("--gen-length", "--block-length", "--steps", "--threshold"):
    assert flag in out
  assert "GEN_LENGTH / BLOCK_LENGTH blocks" in out  # the note on how they relate
  assert "steps = gen-length" in out  # the defaults
  for task in ("sudoku", "countdown", "arith"):  # each task's prompt format, by example
    assert f"--task {task}" in out


def test_a_missing_required_argument_is_a_usage_error_with_exit_2(capsys):
  with pytest.raises(SystemExit) as done:
    cli.main(["sample", "--prompt", "1+1="])
  assert done.value.code == 2 and "--model" in capsys.readouterr().err


def test_the_console_script_runs():
  mro = Path(sys.executable).with_name("mro")
  done = subprocess.run([str(mro), "--help"], capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  assert "train" in done.stdout and "sample" in done.stdout
