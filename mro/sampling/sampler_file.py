"""A model directory's recorded sampler settings: `sampler.json`, the fields of the
`SamplerConfig` the model was trained and validated with (`mro sample`'s defaults)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mro.files import write_json_atomic
from mro.sampling.schedule import SamplerConfig

SAMPLER_FILE = "sampler.json"  # a model directory's recorded sampler settings


def read_sampler_file(path: Path) -> SamplerConfig:
  try:
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
      raise ValueError("expected a JSON object")
    known = {f.name for f in dataclasses.fields(SamplerConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
      raise ValueError(f"unknown field(s) {unknown}; known: {sorted(known)}")
    return SamplerConfig(**raw)
  except (ValueError, TypeError) as e:
    raise ValueError(f"{path}: not a valid sampler settings file: {e}") from e


def write_sampler_file(model_dir: str | Path, cfg: SamplerConfig) -> None:
  """Records `cfg` as the sampler settings of the model in `model_dir`."""
  write_json_atomic(Path(model_dir) / SAMPLER_FILE, dataclasses.asdict(cfg))
