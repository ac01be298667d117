"""Test environment: 8 fake CPU devices, offline datasets/wandb, shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "llada_tiny"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
  if not FIXTURE.is_dir():
    pytest.fail(f"reference fixture not found at {FIXTURE}")
  return FIXTURE


@pytest.fixture(scope="session")
def shared_data() -> Path:
  return SHARED / "data"


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
