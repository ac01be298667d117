"""Test environment: 8 fake CPU devices, offline datasets/wandb, the repository's fixtures.

Everything the tests read lives in the repository: the reference fixture under
`tests/fixtures/` and the benchmark files under `experiments/data/`."""

import os

# Flags are appended, so flags the caller set (e.g. to emulate another CPU) are kept.
# XLA's backend (code generation) optimisation level 0 compiles the tests' small programs
# about 4x faster and runs them a little slower: compiling is most of the suite's time.
for flag, value in (("xla_force_host_platform_device_count", "8"),
                    ("xla_backend_optimization_level", "0")):
  if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{flag}={value}".strip()
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import collections  # noqa: E402
import gc  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "llada_tiny"
DREAM_FIXTURE = ROOT / "tests" / "fixtures" / "dream_tiny"
LLADAMOE_FIXTURE = ROOT / "tests" / "fixtures" / "lladamoe_tiny"
BENCHMARK_DATA = ROOT / "experiments" / "data"


# --- JAX's persistent compilation cache ----------------------------------------------

# The same program is compiled again after each module's clear_caches (below) and by
# the many tests that build their own jitted functions (each `mro` verb run in-process).
# With JAX's disk cache on, those read the executable back; the key is the program, the
# compile options, the XLA flags, JAX's version and the devices, so an entry is never
# used for anything else. The folder is MRO_TEST_JAX_CACHE if set (.ci/run keeps one
# beside its fresh clones), else the pytest cache's (`.pytest_cache/d/jax-compilation`),
# else this session's temporary one; it is kept between runs, so a rerun compiles only what
# changed, and emptied when it passes JAX_CACHE_LIMIT. Only this process uses it, not its
# subprocesses: executables of a multi-process CPU program (tests/test_multihost.py, the
# 2-host Ray sweep) read back from the cache hang at their first collective.
# JAX_COMPILATION_CACHE_DIR set by the caller is left alone (JAX has read it already).
JAX_CACHE_LIMIT = 2 * 2**30  # bytes


def pytest_configure(config):
  if getattr(config.option, "dist", "no") == "loadfile":  # the order set below, kept
    config.option.loadscopereorder = False
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  folder = os.environ.get("MRO_TEST_JAX_CACHE")
  if not folder:
    cache = getattr(config, "cache", None)  # None under `-p no:cacheprovider`
    folder = str(cache.mkdir("jax-compilation")) if cache else tempfile.mkdtemp(
        prefix="mro-jax-cache-")
    if not cache:
      config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
  if not hasattr(config, "workerinput"):  # pytest-xdist's workers share the main's folder
    _bound(Path(folder))
  jax.config.update("jax_compilation_cache_dir", folder)  # before the first compilation
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # every program
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


# --- pytest-xdist: the longest files first -----------------------------------------------

# `-n 2 --dist loadfile` hands each worker a whole file at a time, by default the files
# with the most tests first, which leaves the few-test long ones (a Ray cluster, two
# processes, training runs: the `integration` files) to the end, one worker running alone.
# Here the integration files go first, then the rest by their number of tests.


def pytest_collection_modifyitems(config, items):
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    return  # one process: the files in their usual order
  sizes = collections.Counter(item.nodeid.split("::")[0] for item in items)

  def key(item):
    path = item.nodeid.split("::")[0]
    marks = getattr(getattr(item, "module", None), "pytestmark", [])
    marks = marks if isinstance(marks, list) else [marks]
    return (all(m.name != "integration" for m in marks), -sizes[path], path)
  items.sort(key=key)  # stable: a file's tests keep their order


def _bound(folder: Path) -> None:
  """Empties the cache folder when it has grown past JAX_CACHE_LIMIT: it grows only as
  the code changes (JAX's own size limit would rescan the folder on every write)."""
  if folder.is_dir():
    entries = [p for p in folder.iterdir() if p.is_file()]
    if sum(p.stat().st_size for p in entries) > JAX_CACHE_LIMIT:
      for p in entries:
        p.unlink(missing_ok=True)


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
