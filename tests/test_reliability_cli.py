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
