"""`mro plan` for the Dream and LLaDA-MoE presets: the real shapes, every expert stored,
XLA's FLOPs of the dense expert dispatch beside the model FLOPs at the active experts."""

import contextlib
import dataclasses
import io

import pytest

from models.config import preset
from mro import cli
from mro.plan import PlanConfig, format_report, plan

SAMPLE = dict(batch=2, sample_prompt=16, gen_length=16, block_length=16, steps=2, train=False)


def test_the_moe_plan_stores_every_expert_and_counts_model_flops_at_the_active_ones():
  report = plan(PlanConfig(preset="llada_moe_7b", layers=1, **SAMPLE))
  cfg = preset("llada_moe_7b", n_layers=1)
  assert (report["num_params"], report["active_params"]) == (cfg.num_params(),
                                                             cfg.active_params())
  s = report["sample"]
  assert s["parameters"] == 2 * cfg.num_params()  # bfloat16, all 64 experts, one device
  L = 32
  per_step = lambda c: 2 * L * c.flops_per_token(L, 16 / L)
  assert s["model_flops_per_step"] == pytest.approx(per_step(cfg))
  every_expert = dataclasses.replace(cfg, experts_per_token=cfg.n_experts)
  # XLA runs every expert on every token: its count is the all-experts model count
  assert 0.9 < s["flops_per_step_per_device"] / per_step(every_expert) < 1.3
  assert s["flops_per_step_per_device"] > 2 * s["model_flops_per_step"]
  assert "1.72 B active per token" not in format_report(report)  # one layer, not 16
  assert "B active per token" in format_report(report)


def test_training_model_flops_use_the_active_parameters():
  report = plan(PlanConfig(preset="tiny_lladamoe", batch=2, seq=32, sample=False))
  cfg, t = preset("tiny_lladamoe"), report["train"]
  assert t["model_flops_6nt"] == 6 * cfg.active_params() * 2 * 32
  assert cfg.active_params() < cfg.num_params()


def test_mro_plan_plans_dream_7b_with_fewer_layers_from_the_cli(tmp_path):
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.main(["plan", "--preset", "dream_7b", "--layers", "1", "--sample-only",
                     "--batch", "2", "--sample-prompt", "16", "--gen-length", "16",
                     "--block-length", "16", "--steps", "2", "--json",
                     str(tmp_path / "p.json")])
  assert code == 0, err.getvalue()
  assert "dream_7b with 1 layers" in out.getvalue()
  import json
  report = json.loads((tmp_path / "p.json").read_text())
  cfg = preset("dream_7b", n_layers=1)
  assert report["sample"]["parameters"] == 2 * cfg.num_params()
  # 4 KV heads of 128, bfloat16, 2 rows of 32 tokens, one layer, K and V
  assert report["sample"]["kv_cache"] == 2 * 1 * 2 * 32 * 4 * 128 * 2


def test_plan_refuses_negative_layers_and_unknown_overrides():
  with pytest.raises(ValueError, match="layers"):
    PlanConfig(preset="dream_7b", layers=-1, **SAMPLE)
  with pytest.raises(ValueError, match="d_modle"):
    PlanConfig(preset="dream_7b", model_overrides=(("d_modle", 8),), **SAMPLE)
