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
