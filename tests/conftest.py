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

import gc  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "llada_tiny"
DREAM_FIXTURE = ROOT / "tests" / "fixtures" / "dream_tiny"
LLADAMOE_FIXTURE = ROOT / "tests" / "fixtures" / "lladamoe_tiny"
BENCHMARK_DATA = ROOT / "experiments" / "data"


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops the compiled programs after each module: one process runs the whole suite, and
  the executables of a thousand tests (8 fake devices each) would otherwise pile up."""
  yield
  jax.clear_caches()
  gc.collect()


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


# --- random tiny models and what is run on them, built once per session ---------------


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
  """A random tiny text model (HF format + sentencepiece), tiny_models.save_random_model."""
  from tiny_models import save_random_model

  return save_random_model(tmp_path_factory.mktemp("random_model") / "model")


@pytest.fixture(scope="session")
def text_sampler(model_dir):
  """The random model of `model_dir` as a TextSampler."""
  from mro.loading import text_sampler as open_text_sampler

  return open_text_sampler(model_dir)


@pytest.fixture(scope="session")
def eval_run(model_dir, tmp_path_factory):
  """`run_eval` of tiny_models.EVAL_BASE on the random model with --out: (config, records,
  result lines, generation lines)."""
  import json

  from mro.evaluation.report import generations_path
  from mro.evaluation.runner import EvalConfig, run_eval
  from tiny_models import EVAL_BASE

  out = tmp_path_factory.mktemp("eval") / "res.jsonl"
  cfg = EvalConfig.build(**EVAL_BASE, out=str(out))
  records = run_eval(model_dir, cfg)
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  gens = [json.loads(x) for x in generations_path(out).read_text().splitlines()]
  return cfg, records, lines, gens


@pytest.fixture(scope="session")
def cli_evaluated(tiny_run, tmp_path_factory):
  """One `mro eval --out --plot` run of CLI_EVAL_ARGS on the tiny_run workdir: (exit code,
  stdout, stderr, results path, png)."""
  import contextlib
  import io

  from mro import cli
  from tiny_models import CLI_EVAL_ARGS
  folder = tmp_path_factory.mktemp("cli_eval")
  out, png = folder / "res.jsonl", folder / "acc.png"
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    code = cli.main(["eval", "--model", str(tiny_run[0]), *CLI_EVAL_ARGS, "--out", str(out),
                     "--plot", str(png)])
  return code, stdout.getvalue(), stderr.getvalue(), out, png


@pytest.fixture(scope="session")
def start_models(tmp_path_factory):
  """A random tiny mask predictor and causal scorer sharing a Sudoku tokenizer: the
  starting models of the tiny MRO experiment (tiny_models.mro_config)."""
  from tiny_models import save_start_models

  return save_start_models(tmp_path_factory.mktemp("start"))
