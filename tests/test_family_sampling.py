"""The one compiled sampler on Dream and LLaDA-MoE: exact greedy parity with each family's
reference sampler (Dream's `diffusion_generate`, LLaDA's `generate()` for LLaDA-MoE), and
Dream's options (schedule, confidence rules) composed with blocks, threshold, caches,
guidance and padding."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from mro.evaluation.protocols import get_protocol
from mro.sampling.sampler import left_pad, state_at
from mro.sampling.schedule import SamplerConfig, dream_transfers, tokens_per_step


def _reference(d):
  with np.load(d / "generate.npz") as z:
    gen = dict(z)
  return gen, json.loads((d / "generate_settings.json").read_text())


# --- Dream's schedule ------------------------------------------------------------------------


@pytest.mark.parametrize("masked, steps, want", [
    (24, 24, [0] + [1] * 22 + [2]),  # t falls faster than the masks: the first step waits
    (24, 8, [2, 3, 3, 3, 3, 3, 3, 4]),
    (24, 6, [3, 4, 4, 4, 4, 5]),
    (24, 12, [1] + [2] * 10 + [3]),
    (5, 1, [5]),
])
def test_dream_schedule_commits_int_n_times_one_minus_s_over_t(masked, steps, want):
  got = dream_transfers(masked, steps, 1e-3)
  assert got.tolist() == want and got.sum() == masked


def test_dream_schedule_repeats_per_block_and_llada_shares_evenly():
  cfg = SamplerConfig(gen_length=24, steps=12, block_length=8, schedule="dream")
  assert tokens_per_step(cfg).tolist() == dream_transfers(8, 4, 1e-3).tolist() * 3
  even = dataclasses.replace(cfg, schedule="llada")
  assert tokens_per_step(even).tolist() == [2] * 12


@pytest.mark.parametrize("kwargs, field", [
    (dict(schedule="cosine"), "schedule"),
    (dict(schedule="dream", schedule_eps=0.0), "schedule_eps"),
    (dict(schedule_eps=1.5), "schedule_eps"),
    (dict(remasking="maskgit"), "remasking"),
])
def test_invalid_dream_options_raise_naming_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    SamplerConfig(gen_length=8, steps=8, block_length=8, **kwargs)


# --- parity with the reference samplers ------------------------------------------------------


@pytest.fixture(scope="module")
def dream_runs(dream_tiny, dream_dir):
  gen, settings = _reference(dream_dir)
  runs = {}
  for s in settings:
    scfg = SamplerConfig(gen_length=s["max_new_tokens"], steps=s["steps"],
                         block_length=s["max_new_tokens"], temperature=s["temperature"],
                         remasking=s["alg"], schedule="dream")
    runs[s["index"]] = (scfg, dream_tiny.generate(gen["prompts"], scfg))
  return gen, runs


@pytest.mark.parametrize("index", range(5))
def test_dream_greedy_generation_matches_diffusion_generate_exactly(dream_runs, index):
  gen, runs = dream_runs
  _, out = runs[index]
  np.testing.assert_array_equal(np.asarray(out.tokens), gen[f"out_{index}"])


@pytest.mark.parametrize("index", range(5))
def test_dream_every_intermediate_state_matches_the_reference_history(dream_runs, dream_tiny,
                                                                      index):
  gen, runs = dream_runs
  scfg, out = runs[index]
  history = gen[f"history_{index}"]  # [B, steps, L]: the sequence after each step
  for t in range(scfg.steps):
    state = np.asarray(state_at(out.tokens, out.commit_step, t + 1, dream_tiny.ids.mask))
    np.testing.assert_array_equal(state, history[:, t], err_msg=f"after step {t}")


@pytest.mark.parametrize("index", range(5))
def test_dream_runs_follow_the_step_rule(dream_runs, dream_tiny, index):
  gen, runs = dream_runs
  scfg, out = runs[index]
  P = gen["prompts"].shape[1]
  helpers.assert_committed_once(out, P, scfg, dream_tiny.ids.mask)
  helpers.check_trajectory(dream_tiny, out, P, scfg)


@pytest.mark.parametrize("index", range(4))
def test_lladamoe_greedy_generation_matches_llada_generate_exactly(lladamoe_tiny, lladamoe_dir,
                                                                   index):
  gen, settings = _reference(lladamoe_dir)
  s = settings[index]
  scfg = SamplerConfig(gen_length=s["gen_length"], steps=s["steps"],
                       block_length=s["block_length"], temperature=s["temperature"],
                       remasking=s["remasking"])
  out = lladamoe_tiny.generate(gen["prompts"], scfg)
  np.testing.assert_array_equal(np.asarray(out.tokens), gen[f"out_{index}"])


def test_the_dream_protocol_is_diffusion_generate_with_entropy():
  scfg = get_protocol("dream", "gsm8k").sampler_config()
  assert (scfg.gen_length, scfg.block_length, scfg.steps) == (256, 256, 256)
  assert (scfg.schedule, scfg.remasking, scfg.temperature) == ("dream", "entropy", 0.0)


# --- Dream's options compose with the rest of the sampler -----------------------------------

DREAM_BLOCKS = SamplerConfig(gen_length=24, steps=12, block_length=8, schedule="dream",
                             remasking="entropy")


@pytest.mark.parametrize("extra", [
    {}, {"remasking": "topk_margin"}, {"cfg_scale": 1.0},
    {"threshold": 0.2}, {"cache": "dual"}, {"cache": "prefix"},
    {"cache": "dual", "refresh_every": 2}, {"cache": "dual", "cfg_scale": 0.5},
])
def test_dream_options_compose_with_blocks_threshold_caches_and_guidance(dream_tiny, dream_dir,
                                                                        extra):
  prompts = _reference(dream_dir)[0]["prompts"]
  scfg = dataclasses.replace(DREAM_BLOCKS, **extra)
  out = dream_tiny.generate(prompts, scfg)
  helpers.assert_committed_once(out, prompts.shape[1], scfg, dream_tiny.ids.mask)
  helpers.check_trajectory(dream_tiny, out, prompts.shape[1], scfg)


def test_a_dual_cache_refreshed_every_step_reproduces_dream_exactly(dream_tiny, dream_runs):
  gen, runs = dream_runs
  scfg, out = runs[1]
  for cache in ("dual", "prefix"):
    cached = dream_tiny.generate(gen["prompts"], dataclasses.replace(
        scfg, cache=cache, refresh_every=1))
    np.testing.assert_array_equal(np.asarray(cached.tokens), gen["out_1"], err_msg=cache)


def test_a_window_over_a_fresh_cache_gives_dreams_shifted_padded_logits(dream_tiny):
  """The window reads the hidden state one position before the block (the shift): with a
  cache filled from the same tokens it equals the full forward, padding included."""
  apply, params = dream_tiny.apply, dream_tiny.params
  rng = np.random.default_rng(3)
  tokens = jnp.asarray(rng.integers(0, 280, (3, 40)), jnp.int32)
  mask = jnp.ones((3, 40), bool).at[0, :6].set(False).at[1, :13].set(False)
  positions = jnp.tile(jnp.arange(24, 32)[None], (3, 1))
  want = np.asarray(apply(params, tokens, mask, positions))
  _, kv = apply.fill(params, tokens, mask, positions)
  for start, width in [(24, 8), (24, 16), (16, 24)]:
    got = apply.window(params, tokens, mask, kv, start, width, 24, positions)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0,
                               err_msg=f"window {start}+{width}")


@pytest.mark.parametrize("family", ["dream", "lladamoe"])
def test_left_padded_prompts_generate_as_each_prompt_alone(family, request):
  loaded = request.getfixturevalue(f"{family}_tiny")
  gen, _ = _reference(request.getfixturevalue(f"{family}_dir"))
  rows = [gen["prompts"][i, cut:].tolist() for i, cut in enumerate((0, 3, 7, 5))]
  tokens, mask = left_pad(rows, loaded.ids.pad)
  scfg = (DREAM_BLOCKS if family == "dream"
          else SamplerConfig(gen_length=24, steps=12, block_length=8))
  out = loaded.generate(tokens, scfg, prompt_mask_BP=mask)
  for i, row in enumerate(rows):
    alone = loaded.generate(np.asarray([row], np.int32), scfg)
    np.testing.assert_array_equal(np.asarray(out.tokens)[i, -24:],
                                  np.asarray(alone.tokens)[0, -24:], err_msg=f"row {i}")
