"""Reject sampling and MRO-RL end to end on tiny models: runs, resume, bad settings."""

import json

import numpy as np
import pytest

from mro import config as exp_config
from mro.method.finetuning import reject_sampling
from mro.method.finetuning import rl
from mro.method.finetuning.starting_model import validation
from mro.training.workdir import read_metrics
from rewards.tasks import get_task
from tiny_models import mro_cli_sets as _cli_sets
from tiny_models import mro_config as config

pytestmark = pytest.mark.integration  # whole workflows: reject sampling and MRO-RL runs


def test_reject_sampling_keeps_one_searched_trajectory_per_prompt_and_trains(start_models,
                                                                             tmp_path):
  record = reject_sampling.run(config(start_models), tmp_path)
  with np.load(tmp_path / "trajectories.npz") as z:
    tokens, commit, P = z["tokens"], z["commit_step"], int(z["prompt_len"])
  assert tokens.shape[0] == 8  # top1: one per training prompt
  gen = commit[:, P:]
  assert ((gen >= 0) & (gen < 4)).all()  # complete 4-step trajectories
  for row in gen:  # 24 tokens over 4 steps: 6 committed at each step
    assert np.bincount(row, minlength=4).tolist() == [6, 6, 6, 6]
  assert record["step"] == 4
  assert (tmp_path / "best" / "config.json").exists() and (tmp_path / "model").exists()
  assert any("val_score" in r for r in read_metrics(tmp_path / "metrics.jsonl"))


def test_reject_sampling_with_a_threshold_keeps_every_passing_candidate(start_models,
                                                                        tmp_path):
  reject_sampling.run(config(start_models, reject={"keep": "threshold", "keep_threshold": -1e9},
                    rewards="tv"), tmp_path)
  with np.load(tmp_path / "trajectories.npz") as z:
    assert z["tokens"].shape[0] == 8 * 2  # every candidate of every prompt


def _searched(totals, r_q):
  from mro.method.search.runner import SearchResult
  n = len(totals)
  toks = np.arange(n * 3, dtype=np.int32).reshape(n, 3)  # candidate n's tokens: 3n..3n+2
  best = int(np.argmax(totals))
  return SearchResult("", totals[best], [""] * n, list(totals), list(r_q), [], [],
                      toks[best].tolist(), [0, 1, 2], toks, np.zeros((n, 3), np.int32))


def test_the_quality_keep_rule_keeps_the_best_scored_right_answer_or_nothing():
  r = _searched([3.0, 2.0, 2.5, 0.1], r_q=[0.5, 1.5, 1.5, 1.5])  # the top total is wrong
  (kept,) = reject_sampling.kept_candidates(r, "quality", 1.0)
  assert kept[0].tolist() == [6, 7, 8] and kept[2] == 2.5  # candidate 2: best right one
  assert reject_sampling.kept_candidates(_searched([1.0, 2.0], [0.5, 0.0]), "quality", 1.0) == []
  (top,) = reject_sampling.kept_candidates(r, "top1", 1.0)
  assert top[0].tolist() == [0, 1, 2]  # top1 keeps the wrong top-total candidate
  assert [k[2] for k in reject_sampling.kept_candidates(r, "threshold", 2.0)] == [3.0, 2.0, 2.5]


def test_the_quality_keep_rule_needs_the_quality_reward(start_models):
  with pytest.raises(ValueError, match="keep=quality.*leaves q off"):
    exp_config.validate(config(start_models, reject={"keep": "quality"}, rewards="tv,ppl"),
                        "reject-sample")
  exp_config.validate(config(start_models, reject={"keep": "quality"}, rewards="tv,q"),
                      "reject-sample")


def test_an_interrupted_rl_run_resumes_to_the_uninterrupted_losses(start_models, tmp_path):
  cfg = config(start_models, rl={"baseline": "group_mean"})
  rl.run(cfg, tmp_path / "full")
  rl.run(cfg, tmp_path / "cut", stop_after=3)  # last checkpoint: step 2
  rl.run(cfg, tmp_path / "cut")
  full = read_metrics(tmp_path / "full" / "metrics.jsonl")
  cut = read_metrics(tmp_path / "cut" / "metrics.jsonl")
  key = lambda rs: [(r["step"], r["loss"], r.get("reward")) for r in rs]
  assert key(full) == key(cut)
  assert [r["step"] for r in full] == [1, 2, 3, 4]
  assert "reward" in full[0] and "reward" in full[2]  # rollouts at steps 1 and 3


@pytest.mark.parametrize("options", [
    dict(rl=dict(q_rule="advantage", kl_coef=0.1, shaping=True, clip_eps=None)),
    dict(rl=dict(q_rule="tokens", baseline="group_mean"), rewards="tv=0.5,ppl,q=2"),
])
def test_rl_options_run_end_to_end_with_ratio_one_on_each_fresh_rollout_batch(
    start_models, tmp_path, options):
  rl.run(config(start_models, **options), tmp_path)
  rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for r in rows:
    assert np.isfinite(r["loss"])
    if r["step"] in (1, 3):  # first inner step after a rollout: pi_theta == pi_old
      assert r["ratio"] == pytest.approx(1.0, abs=1e-5)
  assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the start is the reference
  if options["rl"].get("kl_coef"):  # the policy moved away from the frozen start
    assert rows[-1]["kl"] > 0


def test_reject_sampling_can_train_with_the_plain_sft_loss_on_final_answers(start_models,
                                                                            tmp_path):
  record = reject_sampling.run(config(start_models, reject={"stepwise": False}), tmp_path)
  rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
  assert record["step"] == 4 and all(np.isfinite(r["loss"]) for r in rows)
  stepwise = tmp_path.parent / "stepwise"
  reject_sampling.run(config(start_models), stepwise)
  other = [r for r in read_metrics(stepwise / "metrics.jsonl") if "loss" in r]
  assert rows[0]["loss"] != other[0]["loss"]  # a different objective on the same data


def test_rl_settings_that_break_rollout_boundaries_are_refused(start_models):
  with pytest.raises(ValueError, match="batch_size"):
    exp_config.validate(exp_config.from_dict({**json.loads(json.dumps(
        config(start_models).to_dict())), "train": {"steps": 4, "batch_size": 6,
                                                    "warmup_steps": 1}}), "rl")
  bad = config(start_models).to_dict()
  bad["train"]["checkpoint_every"] = 3
  with pytest.raises(ValueError, match="inner_steps"):
    exp_config.validate(exp_config.from_dict(bad), "rl")


def test_mro_config_values_are_checked():
  for sets, match in ((["rl.baseline=mean"], "baseline"), (["rl.q_rule=max"], "q_rule"),
                      (["reject.keep=all"], "keep"), (["reject.n_opt=0"], "n_opt"),
                      (["reject.targets=all"], "reject.targets"),
                      (["rewards.use=tv,xx"], "unknown reward"),
                      (["rewards.use=tv,ppl=x"], "not a number")):
    with pytest.raises(ValueError, match=match):
      exp_config.from_dict(exp_config.apply_sets({}, sets))


def test_reward_weights_in_the_config_reach_the_training_rewards():
  cfg = exp_config.from_dict(exp_config.apply_sets({}, ["rewards.use=tv=0.5,q"]))
  rewards = cfg.rewards
  assert rewards.use == ("tv", "q") and (rewards.w_tv, rewards.w_q) == (0.5, 1.0)


@pytest.mark.parametrize("verb", ["reject-sample", "rl"])
def test_the_cli_verbs_train_and_export_best_and_last(start_models, tmp_path, verb, capsys):
  from mro.cli import main
  code = main([verb, "--config", "mro_sudoku", "--workdir", str(tmp_path / verb),
               *_cli_sets(start_models)])
  assert code == 0, capsys.readouterr().err
  assert (tmp_path / verb / "best" / "config.json").exists()
  assert (tmp_path / verb / "model" / "config.json").exists()
  assert "trained to step 4" in capsys.readouterr().out


def test_sample_and_eval_search_from_the_cli(start_models, tmp_path, capsys):
  from mro.cli import main
  prompt = get_task("sudoku").examples("test", limit=1)[0].prompt
  code = main(["sample", "--model", str(start_models["mdm"]), "--prompt", prompt,
               "--gen-length", "24", "--steps", "4", "--search", "mro", "--k", "2",
               "--group-steps", "2", "--scorer", str(start_models["scorer"]),
               "--task", "sudoku"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  assert len(captured.out.splitlines()) == 1 and "forward passes per prompt" in captured.err
  out = tmp_path / "r.jsonl"
  code = main(["eval", "--model", str(start_models["mdm"]), "--task", "sudoku", "--limit", "4",
               "--steps", "4", "--search", "mro", "--k", "2", "--group-steps", "2",
               "--scorer", str(start_models["scorer"]), "--rewards", "tv,ppl,q",
               "--out", str(out)])
  assert code == 0, capsys.readouterr().err
  record = json.loads(out.read_text())
  assert record["nfe_per_prompt"] == 2 * 4 + 2 * 2 * 1 and record["search"]["k"] == 2
  assert record["scorer_nfe_per_prompt"] == 2 * 2  # k candidates x 2 groups
  gens = [json.loads(x) for x in (tmp_path / "r.generations.jsonl").read_text().splitlines()]
  assert len(gens) == 4 and all(len(g["search"]["candidate_totals"]) == 2 for g in gens)
  for g in gens:  # every candidate's R_tv and R_ppl per group, for analysis
    assert np.shape(g["search"]["candidate_r_tv"]) == np.shape(g["search"]["candidate_r_ppl"]) \
        == (2, 2)
    assert all(v < 0 for row in g["search"]["candidate_r_tv"] for v in row)


def test_search_flags_that_cannot_work_exit_2(start_models, capsys):
  from mro.cli import main
  base = ["eval", "--model", str(start_models["mdm"]), "--task", "sudoku", "--limit", "2",
          "--steps", "4", "--search", "mro"]
  assert main(base + ["--group-steps", "3"]) == 2
  assert "group_steps" in capsys.readouterr().err
  assert main(base + ["--rewards", "tv,ppl"]) == 2  # ppl without a scorer
  assert "scorer" in capsys.readouterr().err


class _RecordingSampler:
  """Stands in for TextSampler: records the sampler config of each validation decode."""

  def __init__(self):
    self.configs = []
    self.mesh = None  # one device

  def encode_prompts(self, prompts):
    return (np.zeros((len(prompts), 4), np.int32),)

  def generate(self, prompts, sampler_cfg, **_):
    self.configs.append(sampler_cfg)
    return [type("G", (), {"text": ""})() for _ in prompts]


def test_validation_decodes_at_its_own_steps_when_given():
  base = {"data": {"task": "sudoku"},
          "sampler": {"gen_length": 24, "steps": 24, "block_length": 24},
          "validation": {"limit": 2}}
  for steps, expected in ((None, 24), (6, 6)):
    cfg = exp_config.from_dict({**base, "validation": {"limit": 2, "steps": steps}})
    sampler = _RecordingSampler()
    validation(cfg, sampler)(1, None)
    assert [c.steps for c in sampler.configs] == [expected]
  cfg = exp_config.from_dict({**base, "validation": {"limit": 2, "steps": 48}})
  with pytest.raises(ValueError, match="validation.steps=48"):
    validation(cfg, _RecordingSampler())
  with pytest.raises(ValueError, match="validation.steps must be >= 1"):
    exp_config.from_dict({**base, "validation": {"steps": 0}})
