"""The LLaDA sampler: reference parity (outputs and every intermediate state) and properties.

Compile budget: each distinct (SamplerConfig, batch shape, mask/no mask) compiles once;
tests share configs where they can (SMALL on the 3 fixture prompts is the workhorse).
"""

import dataclasses

import jax
import numpy as np
import pytest

import helpers
import mro.sampling.sampler as sampler
from mro.sampling.sampler import PROMPT, left_pad, state_at
from mro.sampling.schedule import REMASKING, SamplerConfig, block_of_step, tokens_per_step

SMALL = SamplerConfig(gen_length=16, steps=8, block_length=8)  # 2 blocks, 2 tokens per step
HOT = dataclasses.replace(SMALL, temperature=1.0)
PARITY_KEYS = ["out_g32_s32_b32", "out_g32_s8_b32", "out_g32_s16_b8", "out_g32_s4_b8",
               "out_padded_g32_s16_b8"]


@pytest.fixture(scope="module")
def reference_runs(llada_tiny, generate_ref):
  """Our sampler on the five fixture runs: key -> (setting, SamplerConfig, prompt mask, out)."""
  runs = {}
  for s in helpers.fixture_settings(generate_ref):
    scfg = helpers.sampler_config(s)
    mask = generate_ref[s["attention_mask_key"]] if s["attention_mask_key"] else None
    out = llada_tiny.generate(generate_ref[s["prompts_key"]], scfg, prompt_mask_BP=mask)
    runs[s["key"]] = (s, scfg, mask, jax.device_get(out))
  assert sorted(runs) == sorted(PARITY_KEYS)
  return runs


@pytest.fixture(scope="module")
def small_run(llada_tiny, prompts):
  return jax.device_get(llada_tiny.generate(prompts, SMALL))


# --- parity with the reference generate() ------------------------------------------------


@pytest.mark.parametrize("key", PARITY_KEYS)
def test_generation_matches_reference_exactly(reference_runs, generate_ref, key):
  _, _, _, out = reference_runs[key]
  np.testing.assert_array_equal(np.asarray(out.tokens), generate_ref[key])


@pytest.mark.parametrize("key", PARITY_KEYS)
def test_every_intermediate_state_matches_reference_trace(reference_runs, llada_tiny,
                                                          generate_ref, key):
  setting, scfg, _, out = reference_runs[key]
  trace = generate_ref[setting["trace_key"]]
  assert trace.shape[0] == scfg.steps == int(out.nfe)
  for t in range(scfg.steps):
    np.testing.assert_array_equal(
        np.asarray(state_at(out.tokens, out.commit_step, t, llada_tiny.ids.mask)), trace[t],
        err_msg=f"{key}: state before step {t}")
  # And after the last step, the final output.
  np.testing.assert_array_equal(
      np.asarray(state_at(out.tokens, out.commit_step, scfg.steps, llada_tiny.ids.mask)),
      generate_ref[key])


# --- structural properties on the reference runs -----------------------------------------


@pytest.mark.parametrize("key", PARITY_KEYS)
def test_prompt_tokens_never_change(reference_runs, generate_ref, key):
  setting, _, _, out = reference_runs[key]
  prompt = generate_ref[setting["prompts_key"]]
  np.testing.assert_array_equal(np.asarray(out.tokens)[:, :prompt.shape[1]], prompt)
  np.testing.assert_array_equal(np.asarray(out.commit_step)[:, :prompt.shape[1]], PROMPT)


@pytest.mark.parametrize("key", PARITY_KEYS)
def test_every_generated_position_is_committed_exactly_once(reference_runs, llada_tiny,
                                                            generate_ref, key):
  setting, scfg, _, out = reference_runs[key]
  prompt_len = generate_ref[setting["prompts_key"]].shape[1]
  helpers.assert_committed_once(out, prompt_len, scfg, llada_tiny.ids.mask)


@pytest.mark.parametrize("key", PARITY_KEYS)
def test_blocks_are_decoded_left_to_right(reference_runs, generate_ref, key):
  setting, scfg, _, out = reference_runs[key]
  prompt_len = generate_ref[setting["prompts_key"]].shape[1]
  gen = np.asarray(out.commit_step)[:, prompt_len:].reshape(-1, scfg.num_blocks,
                                                            scfg.block_length)
  assert (gen.max(-1)[:, :-1] < gen.min(-1)[:, 1:]).all()
  # Each step works only on its scheduled block.
  want = np.broadcast_to(np.arange(scfg.num_blocks)[None, :, None], gen.shape)
  np.testing.assert_array_equal(np.asarray(block_of_step(scfg))[gen], want)


def test_small_run_satisfies_the_step_rule(llada_tiny, prompts, small_run):
  helpers.assert_committed_once(small_run, prompts.shape[1], SMALL, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, small_run, prompts.shape[1], SMALL)


def test_mask_tokens_inside_a_prompt_stay_as_given(llada_tiny, prompts):
  mask_id = llada_tiny.ids.mask
  with_masks = prompts.copy()
  with_masks[:, [2, 7]] = mask_id
  out = llada_tiny.generate(with_masks, SMALL)
  np.testing.assert_array_equal(np.asarray(out.tokens)[:, :12], with_masks)
  helpers.assert_committed_once(out, 12, SMALL, mask_id)


def test_uneven_schedule_commits_the_remainder_in_the_first_steps(llada_tiny, prompts):
  scfg = SamplerConfig(gen_length=20, steps=6, block_length=10)  # [4, 3, 3] per block
  out = llada_tiny.generate(prompts, scfg)
  helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)


def test_a_stopped_run_resumes_to_the_same_result(llada_tiny, prompts, small_run):
  run = jax.jit(sampler.run_steps, static_argnames=("apply", "prompt_len", "cfg", "mask_id",
                                                    "stop"))
  mask_id, P = llada_tiny.ids.mask, prompts.shape[1]
  start = sampler.init_state(jax.numpy.asarray(prompts), SMALL.gen_length,
                             sampler.row_keys(jax.random.key(0), 3), mask_id)
  kw = dict(prompt_len=P, cfg=SMALL, mask_id=mask_id)
  mid = run(llada_tiny.apply, llada_tiny.params, start, None, stop=3, **kw)
  assert int(mid.step) == 3
  np.testing.assert_array_equal(
      np.asarray(mid.tokens), np.asarray(state_at(small_run.tokens, small_run.commit_step, 3,
                                                  mask_id)))
  end = run(llada_tiny.apply, llada_tiny.params, mid, None, stop=None, **kw)
  np.testing.assert_array_equal(np.asarray(end.tokens), np.asarray(small_run.tokens))
  np.testing.assert_array_equal(np.asarray(end.commit_step), np.asarray(small_run.commit_step))


# --- randomness ----------------------------------------------------------------------------


def test_same_seed_gives_same_tokens_at_positive_temperature(llada_tiny, prompts):
  a = llada_tiny.generate(prompts, HOT, key=jax.random.key(7))
  b = llada_tiny.generate(prompts, HOT, key=jax.random.key(7))
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  np.testing.assert_array_equal(np.asarray(a.commit_step), np.asarray(b.commit_step))
  helpers.assert_committed_once(a, prompts.shape[1], HOT, llada_tiny.ids.mask)


def test_different_seeds_give_different_tokens(llada_tiny, prompts, small_run):
  a = np.asarray(llada_tiny.generate(prompts, HOT, key=jax.random.key(7)).tokens)
  b = np.asarray(llada_tiny.generate(prompts, HOT, key=jax.random.key(8)).tokens)
  # 48 tokens drawn at temperature 1 from a 288-token random model: most must differ.
  assert (a[:, 12:] != b[:, 12:]).mean() > 0.5
  assert (a[:, 12:] != np.asarray(small_run.tokens)[:, 12:]).mean() > 0.5


def test_rows_of_a_batch_draw_different_noise(llada_tiny):
  same = np.repeat(np.asarray([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]], np.int32), 3, 0)
  tokens = np.asarray(llada_tiny.generate(same, HOT, key=jax.random.key(1)).tokens)
  # Identical rows would share every token; independent noise changes many of them.
  assert (tokens[0, 12:] != tokens[1, 12:]).mean() > 0.25
  assert (tokens[1, 12:] != tokens[2, 12:]).mean() > 0.25


def test_tiny_temperature_reproduces_greedy_decoding(llada_tiny, prompts, small_run):
  cool = dataclasses.replace(SMALL, temperature=1e-6)
  out = llada_tiny.generate(prompts, cool, key=jax.random.key(3))
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(small_run.tokens))
  np.testing.assert_array_equal(np.asarray(out.commit_step), np.asarray(small_run.commit_step))


# --- batch invariance ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eight_prompts(prompts, llada_tiny) -> np.ndarray:
  rng = np.random.default_rng(11)
  extra = rng.integers(0, llada_tiny.ids.pad, (5, prompts.shape[1])).astype(np.int32)
  return np.concatenate([prompts, extra])


def test_batch_of_eight_equals_each_row_alone_greedy(llada_tiny, eight_prompts):
  scfg = SamplerConfig(gen_length=32, steps=16, block_length=8)  # as out_g32_s16_b8
  batch = llada_tiny.generate(eight_prompts, scfg)
  for i in range(8):
    alone = llada_tiny.generate(eight_prompts[i:i + 1], scfg)
    np.testing.assert_array_equal(np.asarray(batch.tokens)[i], np.asarray(alone.tokens)[0],
                                  err_msg=f"row {i}")
    np.testing.assert_array_equal(np.asarray(batch.commit_step)[i],
                                  np.asarray(alone.commit_step)[0], err_msg=f"row {i}")


def test_batch_of_eight_equals_each_row_alone_at_positive_temperature(llada_tiny,
                                                                      eight_prompts):
  key = jax.random.key(42)
  batch = llada_tiny.generate(eight_prompts, HOT, key=key, row_ids=np.arange(100, 108))
  for i in range(8):
    alone = llada_tiny.generate(eight_prompts[i:i + 1], HOT, key=key, row_ids=[100 + i])
    np.testing.assert_array_equal(np.asarray(batch.tokens)[i], np.asarray(alone.tokens)[0],
                                  err_msg=f"row {i}")
    np.testing.assert_array_equal(np.asarray(batch.commit_step)[i],
                                  np.asarray(alone.commit_step)[0], err_msg=f"row {i}")


def test_left_padded_prompts_generate_as_each_prompt_alone(llada_tiny, reference_runs,
                                                           generate_ref):
  _, scfg, mask, out = reference_runs["out_padded_g32_s16_b8"]
  padded = generate_ref["padded_prompts"]
  assert sorted(set(mask.sum(1))) == [5, 9, 12]  # mixed lengths
  rows = [padded[i, mask[i] == 1].tolist() for i in range(padded.shape[0])]
  rebuilt, rebuilt_mask = left_pad(rows, pad_id=llada_tiny.ids.pad)
  np.testing.assert_array_equal(rebuilt, padded)
  np.testing.assert_array_equal(rebuilt_mask, mask)
  for i, row in enumerate(rows):
    real = np.asarray([row], np.int32)
    alone = llada_tiny.generate(real, scfg)
    np.testing.assert_array_equal(np.asarray(out.tokens)[i, 12:], np.asarray(alone.tokens)[0, -32:],
                                  err_msg=f"row {i}")
    np.testing.assert_array_equal(np.asarray(out.commit_step)[i, 12:],
                                  np.asarray(alone.commit_step)[0, -32:], err_msg=f"row {i}")


def test_left_pad_builds_tokens_and_mask():
  tokens, mask = left_pad([[1, 2, 3], [4]], pad_id=9)
  np.testing.assert_array_equal(tokens, [[1, 2, 3], [9, 9, 4]])
  np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1]])
  assert tokens.dtype == np.int32 and mask.dtype == np.int32


@pytest.mark.parametrize("rows", [[], [[1, 2], []]])
def test_left_pad_refuses_empty_prompts(rows):
  with pytest.raises(ValueError, match="at least one token"):
    left_pad(rows, pad_id=0)


# --- remasking modes, threshold mode, guidance -----------------------------------------------


@pytest.mark.parametrize("remasking", REMASKING)
def test_every_remasking_mode_commits_each_position_once(llada_tiny, prompts, remasking):
  scfg = dataclasses.replace(SMALL, remasking=remasking)
  out = llada_tiny.generate(prompts, scfg)
  helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)


def test_random_remasking_ignores_confidence(llada_tiny, prompts, small_run):
  out = llada_tiny.generate(prompts, dataclasses.replace(SMALL, remasking="random"))
  assert (np.asarray(out.commit_step) != np.asarray(small_run.commit_step)).any()


def test_low_threshold_commits_each_block_in_one_step(llada_tiny, prompts):
  # At temperature 0 the argmax has probability >= 1/vocab > 1e-4: every masked
  # position of the current block passes the threshold at once.
  scfg = dataclasses.replace(SMALL, threshold=1e-4)
  out = llada_tiny.generate(prompts, scfg)
  assert int(out.nfe) == scfg.num_blocks
  gen = np.asarray(out.commit_step)[:, 12:].reshape(3, scfg.num_blocks, -1)
  np.testing.assert_array_equal(gen, np.broadcast_to(np.arange(scfg.num_blocks)[:, None],
                                                     gen.shape))
  helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)


def test_threshold_one_decodes_one_token_per_step_like_the_reference(llada_tiny, prompts,
                                                                    reference_runs):
  # No probability reaches 1.0 on this model, so each step commits only its forced top-1:
  # the same trajectory as the fixed schedule with steps == gen_length.
  _, fixed_cfg, _, ref = reference_runs["out_g32_s32_b32"]
  scfg = dataclasses.replace(fixed_cfg, threshold=1.0)
  out = llada_tiny.generate(prompts, scfg)
  assert int(out.nfe) == scfg.gen_length
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  np.testing.assert_array_equal(np.asarray(out.commit_step), np.asarray(ref.commit_step))


def test_middle_threshold_commits_confident_positions_together(llada_tiny, prompts):
  scfg = dataclasses.replace(SMALL, threshold=0.3)
  out = llada_tiny.generate(prompts, scfg)
  assert scfg.num_blocks < int(out.nfe) < scfg.gen_length
  helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)
  # Rows finish after different numbers of steps; the loop runs until the slowest one.
  last = np.asarray(out.commit_step)[:, 12:].max(1)
  assert len(set(last.tolist())) > 1 and last.max() == int(out.nfe) - 1


def test_fixed_steps_with_an_unreachable_threshold_is_the_fixed_schedule(llada_tiny, prompts,
                                                                          small_run):
  # No probability reaches 1.0: every step commits only ceil(masked / steps left), which
  # for blocks the steps divide is the equal-shares schedule, token for token.
  scfg = dataclasses.replace(SMALL, threshold=1.0, fixed_steps=True)
  out = llada_tiny.generate(prompts, scfg)
  assert int(out.nfe) == scfg.steps
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(small_run.tokens))
  np.testing.assert_array_equal(np.asarray(out.commit_step), np.asarray(small_run.commit_step))


@pytest.mark.parametrize("rule", [dict(threshold=0.3), dict(threshold=1e-4), dict(factor=1.0)])
def test_fixed_steps_keeps_an_adaptive_rule_to_the_steps(llada_tiny, prompts, rule):
  # 2 blocks of 8 in 4 steps: the adaptive rule alone takes more steps than that (the
  # threshold-0.3 test above) or fewer; within the steps each row ends every block on time.
  scfg = dataclasses.replace(SMALL, steps=4, fixed_steps=True, **rule)
  out = llada_tiny.generate(prompts, scfg)
  assert int(out.nfe) == scfg.steps
  per_row = np.asarray(out.nfe_per_row)
  assert (per_row <= scfg.steps).all() and (per_row >= scfg.num_blocks).all()
  helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)
  free = llada_tiny.generate(prompts, dataclasses.replace(scfg, fixed_steps=False))
  if rule.get("threshold", 1) > 0.01:  # the free rule needs more steps than 4 here
    assert int(free.nfe) > scfg.steps
  else:  # every position passes at once: one step per block, the same tokens
    np.testing.assert_array_equal(per_row, scfg.num_blocks)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(free.tokens))


def test_guidance_doubles_network_evaluations_and_follows_guided_logits(llada_tiny, prompts,
                                                                        small_run):
  scfg = dataclasses.replace(SMALL, cfg_scale=1.5)
  out = llada_tiny.generate(prompts, scfg)
  assert int(out.nfe) == 2 * scfg.steps and int(small_run.nfe) == scfg.steps
  helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)
  assert (np.asarray(out.tokens) != np.asarray(small_run.tokens)).any()


# --- invalid input ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    (dict(gen_length=30, block_length=8), "block_length"),
    (dict(gen_length=32, block_length=8, steps=6), "number of blocks"),
    (dict(gen_length=16, block_length=16, steps=32), "exceeds gen_length"),
    (dict(temperature=-0.1), "temperature"),
    (dict(remasking="lowest_confidence"), "remasking"),
    (dict(threshold=0.0), "threshold"),
    (dict(threshold=1.5), "threshold"),
    (dict(cfg_scale=-1.0), "cfg_scale"),
    (dict(gen_length=0), "gen_length"),
    (dict(steps=0), "steps"),
    (dict(fixed_steps=True), "fixed_steps bounds an adaptive rule"),
    (dict(fixed_steps="yes", threshold=0.9), "fixed_steps must be true or false"),
    (dict(fixed_steps=True, threshold=0.9, correct_below=0.1), "with fixed_steps"),
])
def test_invalid_sampler_config_raises_naming_the_problem(kwargs, field):
  with pytest.raises(ValueError, match=field):
    SamplerConfig(**kwargs)


@pytest.fixture
def no_compile(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("reached the compiled sampler")

  monkeypatch.setattr(sampler, "generate_compiled", fail)


@pytest.mark.parametrize("prompt_shape, mask_shape, match", [
    ((2, 250), None, "max_seq_len=256"),
    ((2, 0), None, "non-empty"),
    ((12,), None, "non-empty"),
    ((3, 12), (3, 11), "prompt mask shape"),
    ((3, 12), (12,), "prompt mask shape"),
])
def test_bad_input_raises_before_compiling(llada_tiny, no_compile, prompt_shape, mask_shape,
                                           match):
  mask = None if mask_shape is None else np.ones(mask_shape, np.int32)
  with pytest.raises(ValueError, match=match):
    llada_tiny.generate(np.ones(prompt_shape, np.int32), SMALL, prompt_mask_BP=mask)


@pytest.mark.parametrize("prompt_shape, mask", [
    ((0, 12), None),
    ((2, 12), np.array([[0] * 11 + [1], [0] * 12], np.int32)),  # row 1: padding only
])
def test_empty_batch_or_all_padding_prompt_raises_before_compiling(llada_tiny, no_compile,
                                                                  prompt_shape, mask):
  with pytest.raises(ValueError):
    llada_tiny.generate(np.ones(prompt_shape, np.int32), SMALL, prompt_mask_BP=mask)


def test_no_compile_guard_really_guards(llada_tiny, no_compile, prompts):
  with pytest.raises(AssertionError, match="compiled sampler"):
    llada_tiny.generate(prompts, SMALL)


def test_schedule_used_by_the_tests_is_the_reference_one():
  # method.md: masked // steps_per_block each, the remainder one extra for the first steps.
  np.testing.assert_array_equal(tokens_per_step(SamplerConfig(32, 8, 32)), [4] * 8)
  np.testing.assert_array_equal(tokens_per_step(SamplerConfig(32, 4, 8)), [8] * 4)
  np.testing.assert_array_equal(tokens_per_step(SamplerConfig(32, 16, 8)), [2] * 16)
  np.testing.assert_array_equal(tokens_per_step(SamplerConfig(20, 6, 10)), [4, 3, 3] * 2)
  np.testing.assert_array_equal(block_of_step(SamplerConfig(20, 6, 10)), [0, 0, 0, 1, 1, 1])
