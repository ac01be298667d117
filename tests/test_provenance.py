"""Results and shipped models say where they came from: each shipped model's
provenance.json matches its weights and says what is not known, result records hold no
machine-specific paths, and every results file is indexed with the command that made it
(experiments/results/README.md). Files only: nothing is loaded or compiled."""

import json
import re

import pytest

from experiments import provenance
from mro import paths

SHIPPED = sorted(p.parent for p in paths.MODELS.glob("*/*/config.json"))
RESULTS = paths.EXPERIMENTS / "results"
RESULT_FILES = sorted(p for p in RESULTS.rglob("*") if p.is_file() and p.name != "README.md")


def _id(path):
  return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("model_dir", SHIPPED, ids=_id)
def test_each_shipped_model_has_provenance_whose_sha256_is_its_weights(model_dir):
  record = json.loads((model_dir / "provenance.json").read_text())
  assert record["weights_sha256"] == provenance.sha256(model_dir / "model.safetensors")
  assert (paths.CONFIGS / f"{record['config']}.yaml").is_file()
  assert record["command"].split()[:2] in (["mro", "train"], ["mro", "reject-sample"])
  unknown = [k for k in ("commit", "steps", "final_loss") if record[k] is None]
  assert not unknown or "not recorded" in record.get("note", ""), \
      f"{unknown} are null: the note must say what was not recorded"
  for e in record["evals"]:
    assert 0.0 <= e["accuracy"] <= 1.0 and e["n"] > 0 and e["task"] == model_dir.name


def test_a_wheel_ships_every_shipped_model_config_and_data_file():
  """pyproject's package-data globs cover every file a non-editable install needs, so it
  finds models and benchmark files where a checkout does (mro/paths.py)."""
  import tomllib
  globs = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
      "package-data"]["experiments"]
  shipped = {p for g in globs for p in paths.EXPERIMENTS.glob(g) if p.is_file()}
  needed = {p for folder in ("configs", "sweeps", "models", "data")
            for p in (paths.EXPERIMENTS / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
  assert sorted(str(p.relative_to(paths.ROOT)) for p in needed - shipped) == []


def test_the_provenance_check_sees_a_changed_weight_file(tmp_path):
  weights = tmp_path / "model.safetensors"
  weights.write_bytes(b"\x00" * 64)
  before = provenance.sha256(weights)
  weights.write_bytes(b"\x00" * 63 + b"\x01")
  assert provenance.sha256(weights) != before


def test_result_records_hold_no_absolute_paths_into_a_checkout():
  checkout_path = re.compile(r'"/[^"]*/(experiments|runs)/[^"]*"')
  found = [f"{p.relative_to(paths.ROOT)}: {m.group(0)}" for p in RESULT_FILES
           if p.suffix in (".jsonl", ".json", ".md")
           for m in checkout_path.finditer(p.read_text())]
  assert not found, found[:5]


def test_every_results_file_is_indexed_with_the_command_that_made_it():
  index = (RESULTS / "README.md").read_text()
  missing = [str(p.relative_to(RESULTS)) for p in RESULT_FILES
             if str(p.relative_to(RESULTS)) not in index]
  assert not missing, f"add these to experiments/results/README.md: {missing}"
  first_cells = [line.split("|")[1] for line in index.splitlines()
                 if line.startswith("| `")]  # the index table: | `file` ... | command |
  named = {n for cell in first_cells for n in re.findall(r"`([^`]+)`", cell)}
  stale = sorted(n for n in named if not (RESULTS / n).exists())
  assert not stale, f"experiments/results/README.md names missing files: {stale}"
