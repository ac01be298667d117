"""`mro plan`: ahead-of-time compilation on abstract shapes reports XLA's per-device
memory and FLOPs; the split into parameters / optimizer state / batch adds up to XLA's
arguments; meshes larger than this process plan in a subprocess; bad input is refused."""

import contextlib
import io
import json

import pytest

from models.config import preset
from models.sharding import MeshConfig
from mro import cli
from mro.plan import PlanConfig, format_report, plan

TINY = dict(preset="tiny", batch=16, seq=128, prompt_len=32, sample_prompt=32,
            gen_length=64, block_length=32)


@pytest.fixture(scope="module")
def report_222():
  return plan(PlanConfig(mesh=MeshConfig(2, 2, 2), **TINY))


def test_plan_splits_xla_arguments_into_parameters_optimizer_state_and_batch(report_222):
  t = report_222["train"]
  n = preset("tiny").num_params()
  # tiny is float32; every matrix is split 4 ways (fsdp x tensor), norms are replicated.
  assert n * 4 / 4 < t["parameters"] < n * 4 / 4 * 1.01
  assert t["optimizer_state"] == pytest.approx(2 * t["parameters"], rel=0.01)  # Adam mu, nu
  rng_and_step = 8 + 4
  assert t["arguments"] == (t["parameters"] + t["optimizer_state"] + t["batch_bytes"]
                            + rng_and_step)
  assert t["aliased"] >= t["parameters"] + t["optimizer_state"]  # the state is donated
  assert 0 < t["saved_activations"] < t["temporaries"]
  assert t["peak"] >= t["arguments"] + t["temporaries"]


def test_plan_flops_are_per_device_and_match_the_model_count(report_222):
  t, s = report_222["train"], report_222["sample"]
  assert t["flops_total"] == pytest.approx(8 * t["flops_per_device"])
  # 6 N tokens (+ the remat forward, + attention): between 1x and 1.6x the 6NT estimate.
  assert 1.0 < t["flops_total"] / t["model_flops_6nt"] < 1.6
  # One denoising step: the network on 16 rows of 96 tokens, 2 FLOPs per weight per token.
  n_body = preset("tiny").num_params() - 2 * 512 * 128
  per_step = 2 * n_body * 16 * 96 / 8
  assert 0.8 < s["flops_per_step_per_device"] / per_step < 2.0
  assert s["flops_per_device"] == pytest.approx(64 * s["flops_per_step_per_device"])


def test_plan_report_reads_as_a_table(report_222):
  text = format_report(report_222)
  for part in ("mesh data=2 fsdp=2 tensor=2 (8 devices", "parameters", "optimizer state",
               "temporaries", "saved activations", "FLOPs per step", "sampler: batch 16"):
    assert part in text, (part, text)


def test_mro_plan_compiles_for_a_mesh_larger_than_this_process(tmp_path):
  """16 devices > the 8 here: the plan runs in a subprocess with 16 fake devices."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.main(["plan", "--preset", "tiny", "--mesh", "data=4,fsdp=2,tensor=2",
                     "--batch", "16", "--seq", "64", "--train-only",
                     "--json", str(tmp_path / "plan.json")])
  assert code == 0, err.getvalue()
  assert "(16 devices" in out.getvalue()
  report = json.loads((tmp_path / "plan.json").read_text())
  assert report["devices"] == 16 and "sample" not in report
  assert report["train"]["flops_total"] == pytest.approx(16 * report["train"]["flops_per_device"])


@pytest.mark.parametrize("overrides, message", [
    (dict(batch=6), "batch size 6 is not divisible by the data-parallel mesh size 4"),
    (dict(preset="llada_80b"), "unknown model preset"),
    (dict(seq=1024), "seq=1024 exceeds tiny max_seq_len=256"),
    (dict(gen_length=64, block_length=24), "not divisible by block_length"),
    (dict(batch=16, grad_accum=3), "not divisible by grad_accum=3"),
    (dict(prompt_len=128), "prompt_len=128 must be < seq=128"),
    (dict(loss_chunk=-1), "loss_chunk must be >= 0"),
])
def test_plan_refuses_bad_input_before_compiling(overrides, message):
  with pytest.raises(ValueError, match=message):
    PlanConfig(**{**TINY, "mesh": MeshConfig(2, 2, 2), **overrides})


def test_mro_plan_reports_bad_input_as_an_error():
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    code = cli.main(["plan", "--preset", "tiny", "--mesh", "data=3", "--batch", "8"])
  assert code == 2 and "batch size 8 is not divisible" in err.getvalue()


@pytest.mark.slow
def test_llada_8b_plans_on_a_64_device_mesh():
  """The numbers of docs/results.md ("Scale"): abstract shapes only (nothing allocated),
  1-2 minutes."""
  report = plan(PlanConfig(preset="llada_8b", mesh=MeshConfig(8, 4, 2), batch=64, seq=2048,
                           prompt_len=512))
  t = report["train"]
  assert report["num_params"] == 8_015_581_184
  gib = 2**30
  assert 1.8 * gib < t["parameters"] < 1.9 * gib  # 16 GB of bfloat16 over fsdp x tensor = 8
  assert t["peak"] < 95 * gib  # fits a v5p chip / an 80 GB GPU? (docs/results.md)


def test_plan_reports_the_kv_cache_per_device_from_the_formula(report_222):
  # tiny: 4 layers, 4 KV heads of 32, float32; 16 rows / (2 x 2), 4 heads / 2, 32 + 64 tokens.
  assert report_222["sample"]["kv_cache"] == 2 * 4 * (16 // 4) * 96 * (4 // 2) * 32 * 4
  assert "KV cache" in format_report(report_222)


def test_the_kv_cache_of_llada_8b_at_the_planner_defaults_is_2_gib_per_device_alone():
  from mro.plan import sample_cache_bytes
  cfg = PlanConfig(batch=8)  # llada_8b, prompt 256 + gen 256, bfloat16, one device
  assert sample_cache_bytes(cfg) == 2 * 32 * 8 * 512 * 32 * 128 * 2 == 2 * 2**30
  assert sample_cache_bytes(cfg, guidance=True) == 4 * 2**30
  assert sample_cache_bytes(PlanConfig(batch=8, mesh=MeshConfig(2, 2, 2))) == 2**30 // 4
