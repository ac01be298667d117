"""Token correction (SamplerConfig.correct_below): the remasking sampler driven by token
verification. After a step commits, its least confident new tokens are re-predicted with
only their own position masked; those below the threshold go back to MASK, each position
at most once, never at a block's last step of the fixed schedule.

Compile budget: the fixture model at gen_length 16 (2 blocks of 8, 8 steps: 2 tokens a
step, so 2 leave-one-out rows a step); one config that re-masks (0.999: the random fixture
model is never that sure), one that never does (1e-9), and one step-by-step loop.
"""

import dataclasses
import functools

import helpers
import jax
import numpy as np
import pytest

import mro.sampling.sampler as sampler
from mro.sampling.sampler import NOT_COMMITTED, PROMPT
from mro.sampling.schedule import SamplerConfig, tokens_per_step

PLAIN = SamplerConfig(gen_length=16, steps=8, block_length=8)  # as test_sampler's SMALL
CORRECT = dataclasses.replace(PLAIN, correct_below=0.999, correct_max=2)
NEVER = dataclasses.replace(PLAIN, correct_below=1e-9)
THRESHOLD = SamplerConfig(gen_length=16, steps=16, block_length=8, threshold=0.5,
                          correct_below=0.999)


@pytest.fixture(scope="module")
def corrected(llada_tiny, prompts):
  return jax.device_get(llada_tiny.generate(prompts, CORRECT))


def _steps(loaded, prompt_BP, cfg: SamplerConfig):
  """Every state of a run (step by step through `denoise_step`, as generate's loop)."""
  B, P = prompt_BP.shape
  keys = sampler.row_keys(jax.random.key(0), B)
  state = sampler.init_state(jax.numpy.asarray(prompt_BP), cfg.gen_length, keys,
                             loaded.ids.mask, None,
                             sampler.new_correction(B, P + cfg.gen_length, cfg))
  step = jax.jit(functools.partial(sampler.denoise_step, loaded.apply, attn_mask=None,
                                   prompt_len=P, cfg=cfg, mask_id=loaded.ids.mask))
  states = [jax.device_get(state)]
  while (states[-1].commit_step[:, P:] == NOT_COMMITTED).any():
    assert len(states) <= cfg.max_steps, "the loop did not end"
    states.append(jax.device_get(step(loaded.params, states[-1])))
  return states


# --- (a) the prompt is never touched ----------------------------------------------------


def test_correction_never_touches_prompt_positions_with_left_padding(llada_tiny,
                                                                     generate_ref):
  run = [s for s in helpers.fixture_settings(generate_ref)
         if s["key"] == "out_padded_g32_s16_b8"][0]
  padded, mask = generate_ref[run["prompts_key"]], generate_ref[run["attention_mask_key"]]
  assert (mask == 0).any()
  out = jax.device_get(llada_tiny.generate(padded, CORRECT, prompt_mask_BP=mask))
  P = padded.shape[1]
  np.testing.assert_array_equal(out.tokens[:, :P], padded)
  np.testing.assert_array_equal(out.commit_step[:, :P], PROMPT)
  assert out.remasked.sum() > 0  # correction was at work on these rows


# --- (b) nothing below the threshold: the plain sampler, plus the counted rows ----------


def test_nothing_below_the_threshold_is_the_plain_sampler_plus_its_rows(llada_tiny, prompts):
  plain = jax.device_get(llada_tiny.generate(prompts, PLAIN))
  never = jax.device_get(llada_tiny.generate(prompts, NEVER))
  np.testing.assert_array_equal(never.tokens, plain.tokens)
  np.testing.assert_array_equal(never.commit_step, plain.commit_step)
  np.testing.assert_array_equal(never.remasked, 0)
  # 2 rows (the step's 2 tokens) at every step but each block's last: 3 steps x 2 blocks
  assert NEVER.verify_rows == 2
  loo = 2 * 3 * 2
  assert int(never.correction_nfe) == loo
  assert int(never.nfe) == int(plain.nfe) + loo == 8 + loo
  np.testing.assert_array_equal(never.nfe_per_row, np.asarray(plain.nfe_per_row) + loo)


# --- (c) + (d): everything ends committed, re-masks happen, each position once ----------


def _step_commits(loaded, state, P: int, cfg: SamplerConfig) -> np.ndarray:
  """bool[B, L]: what the step rule commits from `state` (before any correction),
  re-derived in float64 NumPy from the network's full logits (greedy, low_confidence)."""
  logits = loaded.logits(state.tokens).astype(np.float64)
  logits[..., loaded.ids.mask] = -np.inf
  logits -= logits.max(-1, keepdims=True)
  conf = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).max(-1)
  is_open = state.commit_step == NOT_COMMITTED
  B, L = is_open.shape
  blocks = is_open[:, P:].reshape(B, cfg.num_blocks, cfg.block_length).any(-1)
  block = blocks.argmax(-1) if cfg.adaptive else np.full(B, int(state.step) // 4)
  in_block = (np.arange(L)[None] - P) // cfg.block_length == block[:, None]
  cand = is_open & in_block & (np.arange(L)[None] >= P)
  conf = np.where(cand, conf, -np.inf)
  order = np.argsort(-conf, axis=-1, kind="stable")
  if cfg.adaptive:
    k = np.maximum((conf >= cfg.threshold).sum(-1), 1)
  else:
    t, left = int(state.step), 4 - int(state.step) % 4
    k = np.maximum(tokens_per_step(cfg)[t], -(-cand.sum(-1) // left))
  commit = np.zeros_like(cand)
  for b in range(B):
    commit[b, order[b, :k[b]]] = True
  return commit & cand


@pytest.mark.parametrize("cfg", [CORRECT, THRESHOLD], ids=["fixed", "threshold"])
def test_every_position_ends_committed_and_is_remasked_at_most_once(llada_tiny, prompts, cfg):
  P, mask_id = prompts.shape[1], llada_tiny.ids.mask
  states = _steps(llada_tiny, prompts, cfg)
  final = states[-1]
  assert not (final.tokens[:, P:] == mask_id).any()
  assert (final.commit_step[:, P:] != NOT_COMMITTED).all()
  np.testing.assert_array_equal(final.tokens[:, :P], prompts)
  np.testing.assert_array_equal(final.commit_step[:, :P], PROMPT)
  ever = np.zeros(final.tokens.shape, bool)  # positions re-masked so far
  loo = np.zeros(len(prompts), int)
  for before, after in zip(states, states[1:]):
    t = int(before.step)
    commit = _step_commits(llada_tiny, before, P, cfg)
    kept = (before.commit_step == NOT_COMMITTED) & (after.commit_step != NOT_COMMITTED)
    assert not (kept & ~commit).any(), f"step {t}: committed outside the step rule"
    undone = commit & ~kept  # committed by the step, then re-masked
    assert not (undone & ever).any(), f"step {t}: a position was re-masked twice"
    np.testing.assert_array_equal(after.tokens[undone], mask_id)
    assert (undone.sum(-1) <= cfg.correct_max).all()
    if not cfg.adaptive and t % cfg.steps_per_block == cfg.steps_per_block - 1:
      assert not undone.any(), f"step {t} re-masked at a block's last step"
    # a row's leave-one-out rows: R when it had a candidate (a new commit never re-masked)
    last = not cfg.adaptive and t % cfg.steps_per_block == cfg.steps_per_block - 1
    loo += cfg.verify_rows * ((commit & ~ever).any(-1) & (not last))
    np.testing.assert_array_equal(after.correction.rows, loo, err_msg=f"step {t}")
    ever |= undone
    np.testing.assert_array_equal(after.correction.remasked, ever, err_msg=f"step {t}")
  assert ever.sum() > 0, "nothing was re-masked at correct_below=0.999"  # (d)


def test_generate_records_what_the_steps_did(llada_tiny, prompts, corrected):
  final = _steps(llada_tiny, prompts, CORRECT)[-1]
  np.testing.assert_array_equal(corrected.tokens, final.tokens)
  np.testing.assert_array_equal(corrected.commit_step, final.commit_step)
  np.testing.assert_array_equal(corrected.remasked, final.correction.remasked.sum(-1))
  assert (corrected.remasked > 0).any()
  # a fixed schedule: 8 steps, and 2 leave-one-out rows at 6 of them
  np.testing.assert_array_equal(corrected.nfe_per_row, 8 + 2 * 6)
  assert int(corrected.nfe) == 8 + 2 * 6


# --- (e) a row's result does not depend on the batch ------------------------------------


def test_each_row_corrects_as_it_would_alone(llada_tiny, prompts, corrected):
  for i in range(prompts.shape[0]):
    alone = jax.device_get(llada_tiny.generate(prompts[i:i + 1], CORRECT))
    for name in ("tokens", "commit_step", "nfe_per_row", "remasked"):
      np.testing.assert_array_equal(getattr(corrected, name)[i], getattr(alone, name)[0],
                                    err_msg=f"row {i}: {name}")


# --- (f) refused settings ---------------------------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    (dict(correct_below=0.0), "correct_below"),
    (dict(correct_below=1.0), "correct_below"),
    (dict(correct_below=1.5), "correct_below"),
    (dict(correct_below=float("nan")), "correct_below"),
    (dict(correct_below=0.5, correct_max=0), "correct_max"),
    (dict(correct_below=0.5, correct_rows=0), "correct_rows"),
    (dict(correct_below=0.5, cache="prefix"), "correct_below"),
])
def test_bad_correction_settings_raise_naming_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(PLAIN, **kwargs)


def test_reject_sampling_rl_and_the_search_refuse_correction():
  from mro import config as exp_config
  from mro.method.finetuning import rollouts
  from mro.method.search.settings import SearchConfig
  cfg = exp_config.ExperimentConfig(sampler=CORRECT)
  with pytest.raises(ValueError, match="reject sampling.*correct_below"):
    exp_config.validate(cfg, "reject-sample")
  with pytest.raises(ValueError, match="RL.*correct_below"):
    exp_config.validate(cfg, "rl")
  with pytest.raises(ValueError, match="RL rollouts.*correct_below"):
    rollouts.sample_rollouts(None, ["x"], CORRECT, 2, seed=0)
  with pytest.raises(ValueError, match="search.*correct_below"):
    SearchConfig().resolve(CORRECT)
  exp_config.validate(exp_config.ExperimentConfig(sampler=PLAIN), "reject-sample")  # fine


def test_eval_and_sample_accept_the_flags():
  from mro import cli, options
  parser = cli.build_parser()
  for verb in (["eval", "--task", "arith"], ["sample", "--model", "m", "--prompt", "x"]):
    args = parser.parse_args(verb + ["--correct-below", "0.2", "--correct-rows", "3",
                                     "--correct-max", "2"])
    assert options.overrides(args, SamplerConfig) == {"correct_below": 0.2,
                                                      "correct_rows": 3, "correct_max": 2}


def test_eval_records_the_leave_one_out_passes_and_the_remasked_tokens(tmp_path):
  from tiny_models import save_random_model

  from mro.evaluation.runner import EvalConfig, run_eval
  model = save_random_model(tmp_path / "model")
  cfg = EvalConfig.build(task="arith", steps="L/4", limit=4, gen_length=16, batch_size=2,
                         correct_below=0.999)
  (record,) = run_eval(model, cfg)
  assert record["sampler"]["correct_below"] == 0.999 and record["batches"] == 2
  # 4 steps in one block of 16 (4 tokens a step): 4 leave-one-out rows at 3 of the steps
  assert record["correction_nfe"] == 2 * 3 * 4
  assert record["nfe"] == 2 * 4 + record["correction_nfe"]
  assert record["denoising_steps"] == 4 and record["nfe_per_prompt"] == 4 + 12
  assert 0 < record["remasked_per_prompt"] <= 3  # a random model is never that sure


def test_with_stop_at_eos_nothing_below_the_threshold_is_still_the_plain_sampler(llada_tiny,
                                                                                  prompts):
  """EOS fills open positions early, so the per-step count must stay the schedule's."""
  params = jax.tree.map(lambda x: x, llada_tiny.params)  # the EOS logit raised, as in
  kernel = params["ff_out"]["kernel"]  # test_fast_decoding's eos_model
  kernel[...] = kernel[...].at[:, llada_tiny.ids.eos].multiply(4.0)
  eos_model = llada_tiny._replace(params=params)
  plain = jax.device_get(eos_model.generate(prompts, dataclasses.replace(PLAIN,
                                                                         stop_at_eos=True)))
  never = jax.device_get(eos_model.generate(prompts, dataclasses.replace(NEVER,
                                                                         stop_at_eos=True)))
  steps = np.asarray(plain.nfe_per_row)
  assert steps.min() < PLAIN.steps, "no row stopped early: the test model needs more EOS"
  np.testing.assert_array_equal(never.tokens, plain.tokens)
  np.testing.assert_array_equal(never.commit_step, plain.commit_step)
  # a row's own leave-one-out rows: 2 at each of its steps but a block's last
  own = [2 * sum(t % 4 != 3 for t in range(n)) for n in steps]
  np.testing.assert_array_equal(never.nfe_per_row, steps + np.asarray(own))
