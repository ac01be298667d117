"""The training benches: the shape pilots' settings (experiments/bench/shape_pilots.py:
every shape within 10M parameters, the schedule scaled to the pilot's budget, bad names
refused) and the shipped models' training curves (experiments/bench/training_curves.py)."""

import pytest

from experiments.bench.shape_pilots import SHAPES, pilot_sets, shape_sets
from mro import config as exp_config


@pytest.mark.parametrize("config", ["default_countdown", "default_arith"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_pilot_shape_has_at_most_10m_parameters(config, shape):
  vocab = exp_config.load_config(config).tokenizer.vocab_size  # the model's follows it
  cfg = exp_config.load_config(config, [*shape_sets(shape), f"model.vocab_size={vocab}"])
  assert 2e6 < cfg.model.num_params() <= 10e6


def test_a_bf16_shape_trains_with_bfloat16_matmuls_and_the_others_with_float32():
  assert "model.compute_dtype=bfloat16" in shape_sets("d256x6-bf16")
  assert "model.compute_dtype=float32" in shape_sets("d256x6")
  assert shape_sets("d256x6-bf16")[:-1] == shape_sets("d256x6")[:-1]


def test_an_unknown_shape_is_refused_naming_the_known_ones():
  with pytest.raises(ValueError, match="unknown shape 'd999x1'.*d256x6"):
    shape_sets("d999x1")


def test_a_pilots_schedule_is_the_configs_scaled_to_its_steps():
  cfg = exp_config.load_config("default_arith")  # 5000 steps, warmup 150
  sets = dict(s.split("=") for s in pilot_sets(cfg, 500))
  assert sets["train.steps"] == "500" and sets["train.warmup_steps"] == "15"
  assert sets["train.checkpoint_every"] == "125"
  cfg = exp_config.load_config("default_arith", pilot_sets(cfg, 500))
  assert cfg.train.effective_warmup == 15


def test_the_training_curves_read_every_shipped_models_logged_losses(tmp_path):
  from experiments.bench.training_curves import TASKS, curves
  found = curves()
  assert sorted(found) == sorted(TASKS)
  assert all(len(points) >= 20 and points[-1][1] < points[0][1] for points in found.values())
  assert curves(tmp_path) == {}  # no metrics there: nothing to plot, no error
