"""The GRPO family end to end on tiny models, through `mro rl`: runs, exact resume, the
ratio per inner step, the CLI, and refused settings."""

import numpy as np
import pytest

from mro import config as exp_config
from mro.method.finetuning import rl
from mro.training.workdir import read_metrics
from tiny_models import mro_cli_sets, mro_config

pytestmark = pytest.mark.integration  # whole workflows: GRPO-family runs through `mro rl`


def grpo_config(start_models, method, rewards="q", **sections):
  return mro_config(start_models, rewards=rewards,
                    rl={"method": method, **sections.pop("rl", {})}, **sections)


def rows_of(workdir):
  return [r for r in read_metrics(workdir / "metrics.jsonl") if "loss" in r]


def test_an_interrupted_coupled_grpo_run_resumes_to_the_uninterrupted_losses(
    start_models, tmp_path):
  cfg = grpo_config(start_models, "coupled_grpo", rewards="tv,q",
                    coupled_grpo={"kl_coef": 0.1})
  rl.run(cfg, tmp_path / "full")
  rl.run(cfg, tmp_path / "cut", stop_after=3)  # last checkpoint: step 2
  rl.run(cfg, tmp_path / "cut")
  key = lambda rs: [(r["step"], r["loss"], r["ratio"], r.get("reward")) for r in rs]
  full, cut = rows_of(tmp_path / "full"), rows_of(tmp_path / "cut")
  assert key(full) == key(cut)
  assert [r["step"] for r in full] == [1, 2, 3, 4]
  assert "reward" in full[0] and "reward" in full[2]  # rollouts at steps 1 and 3


@pytest.mark.parametrize("method, options", [
    ("diffu_grpo", {"diffu_grpo": {"loss_norm": "tokens", "advantage": "normalized"}}),
    ("wd1", {"wd1": {"negative_weight": 0.5}}),
])
def test_grpo_methods_train_with_ratio_one_on_each_fresh_rollout_batch(
    start_models, tmp_path, method, options):
  rl.run(grpo_config(start_models, method, rewards="tv,q", **options), tmp_path)
  rows = rows_of(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"])
                                                            for r in rows)
  assert all(r["zero_std"] == 0 for r in rows if "reward" in r)  # R_tv tells them apart
  assert all(("seq_logp" if method == "wd1" else "clip_frac") in r for r in rows)
  assert (tmp_path / "best" / "config.json").exists() and (tmp_path / "model").exists()
  if method != "wd1":
    for r in rows:  # first inner step after a rollout: π_θ == π_old under the same masks
      if r["step"] in (1, 3):
        assert r["ratio"] == pytest.approx(1.0, abs=1e-5)
    # step 1 has lr 0 (warmup), so the policy has moved by step 4, the second inner step
    assert rows[3]["ratio"] != pytest.approx(1.0, abs=1e-6)


def test_mro_rl_selects_a_grpo_method_and_passes_the_sampler_mode_through_from_the_cli(
    start_models, tmp_path, capsys):
  from mro.cli import main
  code = main(["rl", "--config", "mro_sudoku", "--workdir", str(tmp_path),
               *mro_cli_sets(start_models), "--set", "rl.method=wd1", "--set", "rewards.use=q",
               "--set", "sampler.threshold=0.9"])  # a fast mode: GRPO needs no fixed schedule
  assert code == 0, capsys.readouterr().err
  assert "trained to step 4" in capsys.readouterr().out
  cfg = exp_config.load_resolved(tmp_path / "config.json")
  assert cfg.rl.method == "wd1" and cfg.sampler.threshold == 0.9
  assert all("seq_logp" in r for r in rows_of(tmp_path))  # the wd1 loss's own metric


@pytest.mark.parametrize("sets, match", [
    (["rl.method=ppo"], "rl.method"),
    (["rl.method=wd1", "rl.rollouts_per_prompt=1"], "rl.rollouts_per_prompt"),
    (["diffu_grpo.p_mask_prompt=1.0"], "diffu_grpo.p_mask_prompt"),
    (["diffu_grpo.advantage=mean"], "diffu_grpo.advantage"),
    (["diffu_grpo.loss_norm=batch"], "diffu_grpo.loss_norm"),
    (["coupled_grpo.clip_eps=0"], "coupled_grpo.clip_eps"),
    (["coupled_grpo.t_min=0.9"], "coupled_grpo.t_min"),
    (["coupled_grpo.t_max=1.0"], "coupled_grpo.t_max"),
    (["coupled_grpo.estimator=triple"], "coupled_grpo.estimator"),
    (["coupled_grpo.kl_coef=-1"], "coupled_grpo.kl_coef"),
    (["wd1.psi=0"], "wd1.psi"),
    (["wd1.negative_weight=-0.5"], "wd1.negative_weight"),
    (["wd1.clip_eps=0.2"], "wd1.clip_eps"),  # wd1 has no ratio to clip
])
def test_grpo_config_values_are_refused_naming_the_field(sets, match):
  with pytest.raises(ValueError, match=match.replace(".", r"\.")):
    exp_config.from_dict(exp_config.apply_sets({}, sets))


def test_grpo_settings_that_need_a_fixed_schedule_or_a_reward_are_refused(start_models):
  threshold = {"sampler": {"threshold": 0.9}}
  for rule in (threshold["sampler"], {"factor": 1.0}, {"threshold": 0.9, "fixed_steps": True}):
    with pytest.raises(ValueError, match="rl.group_steps"):
      exp_config.validate(grpo_config(start_models, "diffu_grpo", rewards="tv,q",
                                      sampler=rule), "rl")
  exp_config.validate(grpo_config(start_models, "diffu_grpo", rewards="q", **threshold),
                      "rl")  # fine
  with pytest.raises(ValueError, match="rewards.use"):
    exp_config.validate(grpo_config(start_models, "wd1", rewards="none"), "rl")
