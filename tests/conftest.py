"""Test environment: 8 fake CPU devices, offline datasets/wandb, the repository's fixtures.

Everything the tests read lives in the repository: the reference fixture under
`tests/fixtures/` and the benchmark files under `experiments/data/`."""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  # appended, so flags the caller set (e.g. to emulate another CPU) are kept
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "llada_tiny"
DREAM_FIXTURE = ROOT / "tests" / "fixtures" / "dream_tiny"
LLADAMOE_FIXTURE = ROOT / "tests" / "fixtures" / "lladamoe_tiny"
BENCHMARK_DATA = ROOT / "experiments" / "data"


# Modules that run whole workflows (a training or RL run, CLI verbs end to end, sweeps,
# several processes or a Ray cluster, the shipped models on benchmark files): marked
# `integration`, so `pytest -m "not slow and not integration"` is the quick subset.
INTEGRATION_MODULES = {
    "test_cli", "test_cli_eval", "test_grpo_training", "test_mro_training", "test_multihost",
    "test_new_user", "test_shipped_models", "test_sweep", "test_sweep_ray",
}


def pytest_collection_modifyitems(config, items):
  for item in items:
    if item.module.__name__ in INTEGRATION_MODULES:
      item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
  if not FIXTURE.is_dir():
    pytest.fail(f"reference fixture not found at {FIXTURE}")
  return FIXTURE


@pytest.fixture(scope="session")
def benchmark_data() -> Path:
  return BENCHMARK_DATA


# --- the reference model and its outputs, loaded once per session -------------------


@pytest.fixture(scope="session")
def llada_tiny(fixture_dir):
  """The reference fixture model: `helpers.Loaded` (model, cfg, ids, apply, params)."""
  import helpers

  return helpers.load(fixture_dir)


@pytest.fixture(scope="session")
def forward_ref(fixture_dir) -> dict:
  import numpy as np

  with np.load(fixture_dir / "forward.npz") as z:
    return dict(z)


@pytest.fixture(scope="session")
def generate_ref(fixture_dir) -> dict:
  import numpy as np

  with np.load(fixture_dir / "generate.npz") as z:
    return dict(z)


@pytest.fixture(scope="session")
def prompts(generate_ref):
  """The reference fixture's prompts: int [3, 12], ordinary tokens only."""
  return generate_ref["prompts"]


# --- the Dream and LLaDA-MoE reference fixtures (tests/fixtures/*/README.md) ----------


@pytest.fixture(scope="session")
def dream_dir() -> Path:
  return DREAM_FIXTURE


@pytest.fixture(scope="session")
def lladamoe_dir() -> Path:
  return LLADAMOE_FIXTURE


@pytest.fixture(scope="session")
def dream_tiny(dream_dir):
  import helpers

  return helpers.load(dream_dir)


@pytest.fixture(scope="session")
def lladamoe_tiny(lladamoe_dir):
  import helpers

  return helpers.load(lladamoe_dir)


# --- one tiny training run, shared by test_train.py and test_cli.py ------------------

# `mro train --config tiny` shrunk to seconds: a 32-wide 2-layer model, 200 arith
# examples, 20 steps of 8 sequences, a checkpoint every 3 steps, every step logged.
TINY_TRAIN_SETS = (
    "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=2",
    "model.mlp_hidden=64", "tokenizer.vocab_size=64", "data.train_size=200",
    "data.max_prompt_len=16", "data.max_response_len=64", "train.steps=20",
    "train.batch_size=8", "train.warmup_steps=2", "train.checkpoint_every=3",
    "train.log_every=1", "train.progress=false",
)


@pytest.fixture(scope="session")
def tiny_train_sets() -> list[str]:
  return list(TINY_TRAIN_SETS)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """`mro train` run once in-process to the end: (workdir, exit code, stdout, stderr)."""
  import contextlib
  import io

  from mro import cli
  workdir = tmp_path_factory.mktemp("tiny_run") / "wd"
  out, err = io.StringIO(), io.StringIO()
  argv = ["train", "--config", "tiny", "--workdir", str(workdir)]
  for item in TINY_TRAIN_SETS:
    argv += ["--set", item]
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.main(argv)
  return workdir, code, out.getvalue(), err.getvalue()
