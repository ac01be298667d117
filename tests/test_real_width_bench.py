"""experiments/bench/real_width.py at a reduced width: the checkpoint it writes is a sharded
HF directory with an index in the family's own format that loads back to the tensors it
wrote, and one end-to-end run (write, plan, load, decode) yields the table's numbers."""

import dataclasses
import json

import numpy as np
import pytest

from experiments.bench import real_width as rw
from models.checkpoints import INDEX_FILE, tensor_infos
from models.config import SpecialIds, preset
from models.hf_config import load_hf_config

MODEL_TYPES = {"llada": "llada", "dream": "Dream", "lladamoe": "lladamoe"}


@pytest.mark.parametrize("family", list(rw.PRESETS))
def test_the_written_checkpoint_is_sharded_with_an_index_in_the_familys_format(family,
                                                                              tmp_path):
  _, cfg = rw.shapes(family, layers=2, shrink=64)
  assert cfg.n_layers == 2 and cfg.n_heads == preset(rw.PRESETS[family]).n_heads
  ids = SpecialIds(mask=cfg.vocab_size - 1, eos=cfg.vocab_size - 2, pad=cfg.vocab_size - 3)
  nbytes = rw.write_random_checkpoint(tmp_path, cfg, ids, shard_bytes=100_000)
  index = json.loads((tmp_path / INDEX_FILE).read_text())
  files = set(index["weight_map"].values())
  assert len(files) > 2 and index["metadata"]["total_size"] == nbytes == 2 * cfg.num_params()
  assert json.loads((tmp_path / "config.json").read_text())["model_type"] == MODEL_TYPES[family]
  # config.json does not record the compute dtype (the benchmark loads with the preset's)
  assert load_hf_config(tmp_path)[0] == dataclasses.replace(cfg, compute_dtype="float32")
  infos = tensor_infos(tmp_path)
  assert {str(i.dtype) for i in infos.values()} == {"bfloat16"}
  matrices = [n for n, i in infos.items() if len(i.shape) == 2]
  a, b = (infos[n].read().astype(np.float32) for n in matrices[:2])
  assert 0.015 < a.std() < 0.025 and not np.array_equal(a[:1, :8], b[:1, :8])


def test_one_run_writes_plans_loads_and_decodes_the_moe_model(tmp_path, capsys):
  results = rw.main(["--family", "lladamoe", "--shrink", "32", "--layers", "2",
                     "--batches", "1", "--prompt", "8", "--gen", "8", "--steps", "2",
                     "--dir", str(tmp_path), "--shard-bytes", "1000000"])
  (r,) = results
  assert len(r["files"]) > 2 and r["weight_bytes"] > 1_000_000
  (d,) = r["decode"]
  assert d["planned_peak"] > r["weight_bytes"] and d["measured_peak"] >= r["weight_bytes"]
  assert np.isfinite(d["gap"]) and d["s_per_step"] > 0
  out = capsys.readouterr().out
  assert "| lladamoe (" in out and "| 1 |" in out
  record = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[-1])
  assert record["family"] == "lladamoe" and record["decode"][0]["batch"] == 1
