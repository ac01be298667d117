"""Fast decoding: block KV caches (prefix, dual), parallel commits (threshold, factor rule),
the EOS early stop and per-row NFE, all inside the one compiled sampler.

Exactness is proven through the cached code path itself: with the cache refilled at every
step the sampler must reproduce the reference fixture. The approximate modes are checked
against the NumPy oracle of tests/helpers.py, which re-derives every step's logits from
the cache semantics (which state filled the cache, which positions a step recomputes)
using the model's `fill` / `window` forward, itself checked against the full forward.

Breaks each test was seen to catch (then reverted): a cache filled once and never
refreshed (reference parity, step rule, refresh_every); stale cached keys left unmasked in
the window (the window tests; the oracle shares the model's window, so it cannot); rows
not in lockstep under a cache (batch invariance, adaptive step rule); noise seeded by the
loop's step instead of the row's (batch invariance); `map_rows` not moving the cache (the
gather tests here and in test_search.py); (n)(1 - c_n) instead of (n + 1)(1 - c_n) (factor
tests); no EOS fill (EOS test); every row counted active (NFE checks); a prefix window one
width too small (prefix step rule); K, V counted once in the memory formula (formula
tests); conditional and unconditional caches swapped (guidance step rule).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import helpers
import mro.sampling.sampler as sampler
from models.config import preset
from models.transformer import ModelApply, init_model
from mro.sampling.cache import kv_cache_bytes, new_cache, prefix_windows
from mro.sampling.sampler import left_pad, state_at
from mro.sampling.schedule import SamplerConfig

CACHES = ["prefix", "dual"]
BASE = SamplerConfig(gen_length=32, steps=16, block_length=8)  # 4 blocks, 4 steps each


@pytest.fixture(scope="module")
def padded(generate_ref):
  return generate_ref["padded_prompts"], generate_ref["padded_attention_mask"]


# --- the cache-aware forward -----------------------------------------------------------


def _fresh_window_case(apply, params, vocab, shift=False):
  rng = np.random.default_rng(3)
  tokens = jnp.asarray(rng.integers(0, vocab - 2, (3, 40)), jnp.int32)
  mask = jnp.ones((3, 40), bool).at[0, :6].set(False)
  positions = jnp.tile(jnp.arange(24, 32)[None], (3, 1))
  want = np.asarray(apply(params, tokens, mask, positions))
  logits, kv = apply.fill(params, tokens, mask, positions)
  np.testing.assert_array_equal(np.asarray(logits), want)  # fill = the exact forward
  for start, width, write_from in [(24, 8, 24), (24, 16, 24), (16, 24, 24), (8, 32, 24)]:
    got = apply.window(params, tokens, mask, kv, start, width, write_from, positions)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0,
                               err_msg=f"window {start}+{width} from {write_from}")


def test_a_window_over_a_fresh_cache_gives_the_full_forward_logits(llada_tiny):
  _fresh_window_case(llada_tiny.apply, llada_tiny.params, llada_tiny.cfg.vocab_size)


@pytest.mark.parametrize("overrides", [dict(n_kv_heads=2), dict(shift_logits=True)],
                         ids=["grouped_kv_heads", "shift_logits"])
def test_the_window_forward_handles_grouped_heads_and_shifted_logits(overrides):
  cfg = preset("tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=4, mlp_hidden=64,
               max_seq_len=64, **overrides)
  graphdef, params = nnx.split(init_model(cfg, seed=2))
  _fresh_window_case(ModelApply(graphdef), params, cfg.vocab_size)


def test_a_window_over_a_stale_cache_reads_the_stale_keys(llada_tiny):
  """Keys outside the window come from the cache: changing them after the fill changes
  nothing, while the full forward sees the change."""
  apply, params = llada_tiny.apply, llada_tiny.params
  tokens = jnp.asarray(np.random.default_rng(4).integers(0, 280, (2, 40)), jnp.int32)
  positions = jnp.tile(jnp.arange(24, 32)[None], (2, 1))
  _, kv = apply.fill(params, tokens, None, positions)
  changed = tokens.at[:, 34:].set(7)
  before = apply.window(params, tokens, None, kv, 24, 8, 24, positions)
  after = apply.window(params, changed, None, kv, 24, 8, 24, positions)
  np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
  moved = np.asarray(apply(params, changed, None, positions)) - np.asarray(before)
  assert np.abs(moved).max() > 1e-3


def test_prefix_windows_round_the_remaining_length_up_to_doubling_widths():
  widths, bucket = prefix_windows(SamplerConfig(gen_length=256, steps=256, block_length=32))
  assert widths == (32, 64, 128, 256)
  np.testing.assert_array_equal(bucket, [3, 3, 3, 3, 2, 2, 1, 0])
  widths, bucket = prefix_windows(SamplerConfig(gen_length=24, steps=24, block_length=8))
  assert widths == (8, 16, 24) and bucket.tolist() == [2, 1, 0]


# --- exact mode through the cached code path --------------------------------------------


PARITY = [(key, "dual") for key in ["out_g32_s32_b32", "out_g32_s8_b32", "out_g32_s16_b8",
                                    "out_g32_s4_b8", "out_padded_g32_s16_b8"]] + [
    (key, "prefix") for key in ["out_g32_s32_b32", "out_padded_g32_s16_b8"]]


@pytest.mark.parametrize("key, cache", PARITY)
def test_a_cache_refreshed_every_step_reproduces_the_reference(llada_tiny, generate_ref, key,
                                                              cache):
  setting = next(s for s in helpers.fixture_settings(generate_ref) if s["key"] == key)
  scfg = dataclasses.replace(helpers.sampler_config(setting), cache=cache, refresh_every=1)
  mask = generate_ref[setting["attention_mask_key"]] if setting["attention_mask_key"] else None
  out = llada_tiny.generate(generate_ref[setting["prompts_key"]], scfg, prompt_mask_BP=mask)
  np.testing.assert_array_equal(np.asarray(out.tokens), generate_ref[key])
  trace = generate_ref[setting["trace_key"]]
  for t in range(scfg.steps):  # and every intermediate state
    np.testing.assert_array_equal(
        np.asarray(state_at(out.tokens, out.commit_step, t, llada_tiny.ids.mask)), trace[t])
  np.testing.assert_array_equal(np.asarray(out.nfe_per_row), scfg.steps)


def test_guidance_with_a_cache_refreshed_every_step_equals_exact_guidance(llada_tiny, prompts):
  scfg = dataclasses.replace(BASE, cfg_scale=1.5)
  exact = llada_tiny.generate(prompts, scfg)
  out = llada_tiny.generate(prompts, dataclasses.replace(scfg, cache="dual", refresh_every=1))
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(exact.tokens))
  np.testing.assert_array_equal(np.asarray(out.commit_step), np.asarray(exact.commit_step))
  assert int(out.nfe) == 2 * BASE.steps and (np.asarray(out.nfe_per_row) == 2 * BASE.steps).all()


# --- the approximate caches follow their definition ------------------------------------


RULES = {"fixed": {}, "threshold": dict(threshold=0.3), "factor": dict(factor=2.5)}


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("cache", CACHES)
def test_cached_trajectories_follow_the_step_rule(llada_tiny, padded, cache, rule):
  tokens, mask = padded
  scfg = dataclasses.replace(BASE, cache=cache, **RULES[rule])
  out = jax.device_get(llada_tiny.generate(tokens, scfg, prompt_mask_BP=mask))
  helpers.assert_committed_once(out, tokens.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, tokens.shape[1], scfg, prompt_mask=mask)
  exact = llada_tiny.generate(tokens, dataclasses.replace(scfg, cache="none"),
                              prompt_mask_BP=mask)
  # Not a silent exact mode: the stale K/V change some trajectory.
  assert (np.asarray(out.tokens) != np.asarray(exact.tokens)).any()


def test_refreshing_every_two_steps_follows_the_step_rule(llada_tiny, prompts):
  scfg = dataclasses.replace(BASE, cache="dual", refresh_every=2, threshold=0.3)
  out = jax.device_get(llada_tiny.generate(prompts, scfg))
  helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)


def test_guidance_with_a_dual_cache_follows_the_step_rule(llada_tiny, prompts):
  scfg = dataclasses.replace(BASE, cache="dual", cfg_scale=1.5)
  out = jax.device_get(llada_tiny.generate(prompts, scfg))
  helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
  helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)


# --- parallel commits and the early stop -----------------------------------------------


def test_the_factor_rule_commits_more_tokens_as_the_factor_grows(llada_tiny, prompts):
  nfe = []
  for factor in (0.5, 2.5, 6.0):
    scfg = dataclasses.replace(BASE, factor=factor)
    out = jax.device_get(llada_tiny.generate(prompts, scfg))
    helpers.assert_committed_once(out, prompts.shape[1], scfg, llada_tiny.ids.mask)
    helpers.check_trajectory(llada_tiny, out, prompts.shape[1], scfg)
    nfe.append(int(out.nfe))
  # f < 2 commits one token per step ((n+1)(1-c) >= 2 (1 - c_1) ... is rarely < 0.5).
  assert nfe[0] == BASE.gen_length and nfe[0] > nfe[1] > nfe[2]


@pytest.fixture(scope="module")
def eos_model(llada_tiny):
  """The fixture network with the EOS logit raised, so that rows write EOS early."""
  params = jax.tree.map(lambda x: x, llada_tiny.params)
  kernel = params["ff_out"]["kernel"]
  kernel[...] = kernel[...].at[:, llada_tiny.ids.eos].multiply(4.0)
  return llada_tiny._replace(params=params)


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_stop_at_eos_fills_the_rest_with_eos_and_stops_the_row(eos_model, prompts, cache):
  scfg = dataclasses.replace(BASE, cache=cache, stop_at_eos=True)
  out = jax.device_get(eos_model.generate(prompts, scfg))
  helpers.assert_committed_once(out, prompts.shape[1], scfg, eos_model.ids.mask)
  helpers.check_trajectory(eos_model, out, prompts.shape[1], scfg,
                           eos_id=eos_model.ids.eos)
  nfe = np.asarray(out.nfe_per_row)
  assert nfe.min() < BASE.steps, "no row stopped early: the test model needs more EOS"
  plain = jax.device_get(eos_model.generate(prompts, dataclasses.replace(scfg,
                                                                         stop_at_eos=False)))
  for b in range(len(prompts)):  # identical until the row's first EOS
    eos = np.flatnonzero(out.tokens[b, 12:] == eos_model.ids.eos)
    first_step = out.commit_step[b, 12 + eos].min()
    same = out.commit_step[b] < first_step
    np.testing.assert_array_equal(out.commit_step[b][same], plain.commit_step[b][same])
    np.testing.assert_array_equal(out.tokens[b][same], plain.tokens[b][same])


def test_stop_at_eos_without_the_eos_id_is_refused(llada_tiny, prompts):
  with pytest.raises(ValueError, match="eos_id"):
    llada_tiny.generate(prompts, dataclasses.replace(BASE, stop_at_eos=True), eos_id=None)


# --- batch invariance and padding --------------------------------------------------------


INVARIANCE = {
    "prefix": dict(cache="prefix", threshold=0.3, temperature=0.7, refresh_every=3),
    "dual": dict(cache="dual", factor=2.5, temperature=0.7, stop_at_eos=True),
    "dual-fixed": dict(cache="dual", temperature=0.7),
}


@pytest.mark.parametrize("name", list(INVARIANCE))
def test_a_rows_tokens_do_not_depend_on_the_batch_or_its_padding(eos_model, name):
  rng = np.random.default_rng(5)
  rows = [rng.integers(0, 280, n).tolist() for n in (12, 7, 12, 7, 12, 7)]
  tokens, mask = left_pad(rows, pad_id=eos_model.ids.pad)
  scfg = dataclasses.replace(BASE, **INVARIANCE[name])
  key = jax.random.key(9)
  batch = jax.device_get(eos_model.generate(tokens, scfg, prompt_mask_BP=mask, key=key,
                                            row_ids=np.arange(50, 56)))
  helpers.assert_committed_once(batch, tokens.shape[1], scfg, eos_model.ids.mask)
  for i in (0, 1):  # alone and unpadded (one compile per prompt length)
    alone = eos_model.generate(np.asarray([rows[i]], np.int32), scfg, key=key, row_ids=[50 + i])
    np.testing.assert_array_equal(batch.tokens[i, 12:], np.asarray(alone.tokens)[0, -32:],
                                  err_msg=f"row {i}")
    np.testing.assert_array_equal(batch.commit_step[i, 12:],
                                  np.asarray(alone.commit_step)[0, -32:], err_msg=f"row {i}")
    assert batch.nfe_per_row[i] == int(alone.nfe_per_row[0])


def test_gathering_rows_carries_their_cache(llada_tiny, prompts):
  """A mid-block state with its rows permuted (tokens, steps and cache together) finishes
  as the permuted unpermuted run: a row never reads another row's K/V."""
  scfg = dataclasses.replace(BASE, cache="dual")
  P, mask_id = prompts.shape[1], llada_tiny.ids.mask
  run = jax.jit(sampler.run_steps, static_argnames=("apply", "prompt_len", "cfg", "mask_id",
                                                    "stop"))
  keys = sampler.row_keys(jax.random.key(0), 3)
  start = sampler.init_state(jnp.asarray(prompts), 32, keys, mask_id,
                             new_cache(llada_tiny.apply, llada_tiny.params, 3, P + 32, scfg))
  kw = dict(prompt_len=P, cfg=scfg, mask_id=mask_id)
  mid = run(llada_tiny.apply, llada_tiny.params, start, None, stop=6, **kw)  # inside block 1
  end = run(llada_tiny.apply, llada_tiny.params, mid, None, stop=None, **kw)
  perm = jnp.asarray([2, 0, 1])
  moved = sampler.map_rows(mid, lambda x: x[perm])._replace(keys=mid.keys[perm])
  end_moved = run(llada_tiny.apply, llada_tiny.params, moved, None, stop=None, **kw)
  np.testing.assert_array_equal(np.asarray(end_moved.tokens), np.asarray(end.tokens)[perm])
  np.testing.assert_array_equal(np.asarray(end_moved.commit_step),
                                np.asarray(end.commit_step)[perm])


# --- options and memory ------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, field", [
    (dict(factor=0.0), "factor"),
    (dict(factor=1.0, threshold=0.5), "factor and threshold"),
    (dict(cache="full"), "cache"),
    (dict(cache="dual", refresh_every=0), "refresh_every"),
    (dict(refresh_every=2), "refresh_every"),
    (dict(stop_at_eos=1), "stop_at_eos"),
])
def test_invalid_fast_decoding_options_raise_naming_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    SamplerConfig(**kwargs)


def test_a_cache_needs_a_network_with_the_cache_aware_forward(llada_tiny, prompts):
  plain = lambda params, tokens, mask, positions: llada_tiny.apply(params, tokens, mask,
                                                                   positions)
  with pytest.raises(ValueError, match="cache-aware forward"):
    sampler.generate(plain, llada_tiny.params, prompts, dataclasses.replace(BASE, cache="dual"),
                     mask_id=llada_tiny.ids.mask, max_seq_len=256)


def test_the_cache_memory_formula_matches_the_cache_arrays(llada_tiny):
  cfg = llada_tiny.cfg
  for guidance in (False, True):
    scfg = dataclasses.replace(BASE, cache="dual", cfg_scale=1.0 if guidance else 0.0)
    cache = new_cache(llada_tiny.apply, llada_tiny.params, 3, 44, scfg)
    want = kv_cache_bytes(cfg.n_layers, cfg.n_kv_heads, cfg.resolved_head_dim, 4, 3, 44,
                          guidance=guidance)
    assert cache.k.nbytes + cache.v.nbytes == want
  # Split over 2 x 2 row shards and 2 head shards (the fixture has 4 KV heads).
  assert kv_cache_bytes(2, 4, 16, 4, 8, 44, batch_shards=4, head_shards=2) == \
      2 * 2 * 2 * 44 * 2 * 16 * 4
