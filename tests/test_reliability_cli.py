"""The `mro` verbs under hostile options (issue 29): options that mean nothing are refused
alike by every verb, and outputs that cannot be written are named before any work."""

import pytest

import mro.sampling.sampler as sampler
from mro import cli

pytestmark = pytest.mark.integration  # `mro` verbs end to end, on the shipped models


@pytest.fixture
def no_compile(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("reached the compiled sampler")

  monkeypatch.setattr(sampler, "generate_compiled", fail)


def run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize("steps", ["0", "-4"])
def test_sample_and_eval_refuse_a_non_positive_steps_value_with_one_message(
    capsys, no_compile, steps):
  sample = run(capsys, "sample", "--model", "default", "--task", "arith", "--prompt", "1+2=",
               "--steps", steps)
  evaluate = run(capsys, "eval", "--model", "default", "--task", "arith", "--limit", "2",
                 "--steps", steps)
  want = f"steps must be positive, got {steps}"
  assert sample[0] == 2 and sample[2] == f"mro sample: error: {want}\n", sample
  assert evaluate[0] == 2 and evaluate[2] == f"mro eval: error: {want}\n", evaluate


def test_eval_refuses_an_empty_steps_list_instead_of_using_the_protocols(capsys, no_compile):
  code, _, err = run(capsys, "eval", "--model", "default", "--task", "arith", "--limit", "2",
                     "--steps", "")
  assert code == 2 and "steps must be a comma-separated list" in err, err


# --- outputs that cannot be written are named before the work -----------------------------

OUT_CASES = [
    (["eval", "--task", "arith", "--limit", "2", "--out", "F/res.jsonl"], "--out F/res.jsonl"),
    (["eval", "--task", "arith", "--limit", "2", "--plot", "F/acc.png"], "--plot F/acc.png"),
    (["diagnose", "--task", "arith", "--limit", "2", "--steps", "L", "--out", "F/d.jsonl"],
     "--out F/d.jsonl"),
    (["plot", "R", "--out", "F/p.png"], "--out F/p.png"),
    (["plan", "--preset", "tiny", "--seq", "64", "--sample-prompt", "32", "--gen-length", "32",
      "--json", "F/plan.json"], "--json F/plan.json"),
    (["convert", "M", "F/converted"], "dst F/converted"),
]


@pytest.fixture
def no_work(monkeypatch, no_compile):
  """Every verb's work fails the test if it is reached."""
  from models import convert
  from mro import plan

  def fail(*args, **kwargs):
    raise AssertionError("the work started before its outputs were checked")

  monkeypatch.setattr(plan, "plan", fail)
  monkeypatch.setattr(convert, "convert", fail)


@pytest.mark.parametrize("argv, named", OUT_CASES, ids=[c[0][0] + "-" + c[1].split()[0]
                                                        for c in OUT_CASES])
def test_an_output_under_a_file_is_named_before_the_work_starts(
    tmp_path, capsys, no_work, monkeypatch, argv, named):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "F").write_text("kept")
  (tmp_path / "R").write_text('{"setting_id": "a", "steps": 4, "accuracy": 0.5}\n')
  argv = [{"M": "experiments/models/default/arith"}.get(a, a) for a in argv]
  code, out, err = run(capsys, *argv)
  assert code == 2 and out == "", err
  assert err == (f"mro {argv[0]}: error: {named} cannot be written: {tmp_path / 'F'} is a "
                 "file, not a directory\n"), err
  assert (tmp_path / "F").read_text() == "kept"


@pytest.mark.parametrize("option, value, why", [
    ("--out", "", "--out is empty: give a file path"),
    ("--out", "D", "--out D is a directory: give a file path"),
    ("--plot", "D.png", "--plot D.png is a directory: give a file path"),
])
def test_an_eval_output_that_is_a_directory_or_empty_is_refused_before_sampling(
    tmp_path, capsys, no_compile, monkeypatch, option, value, why):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "D").mkdir()
  (tmp_path / "D.png").mkdir()
  code, _, err = run(capsys, "eval", "--task", "arith", "--limit", "2", option, value)
  assert code == 2 and err == f"mro eval: error: {why}\n", err


def test_a_convert_target_that_is_a_file_is_refused_before_loading(tmp_path, capsys, no_work):
  (tmp_path / "F").write_text("kept")
  code, _, err = run(capsys, "convert", "experiments/models/default/arith", str(tmp_path / "F"))
  assert code == 2 and f"dst {tmp_path / 'F'} is a file: give a directory path" in err, err
