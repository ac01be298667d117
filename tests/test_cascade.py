"""The verified cascade (mro/method/search/cascade.py) and its answer check, chunked R_tv.

Compile budget: chunked verification on the fixture model (2 widths), the random text
model (conftest.model_dir) at gen 16 (two stages, a few padded bucket sizes), and the shipped
Sudoku model for one ranking check.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.logprobs import loo_logprobs
from mro.evaluation.runner import EvalConfig, run_eval
from mro.method.search.cascade import bucket, run_cascade
from mro.method.search.settings import CascadeConfig, parse_stage
from mro.sampling.schedule import SamplerConfig
from rewards.verification import chunk_verification, content_mask

BASE = SamplerConfig(gen_length=16, steps=16, block_length=16, temperature=1.0)
STAGES = ("steps=4", "steps=16")


@pytest.fixture(scope="module")
def arith_prompts():
  from rewards.tasks import get_task
  return [e.prompt for e in get_task("arith").examples("test", limit=5)]


# --- chunked verification -----------------------------------------------------------------


P, G = 4, 8  # the fixture prompts' 12 ordinary tokens as prompt + answer


def _rows(prompts, B=3):
  return np.array(prompts[:B], np.int32)


def test_one_position_per_chunk_is_leave_one_out_over_the_whole_answer(llada_tiny, prompts):
  tokens = _rows(prompts)
  score, per_pos = chunk_verification(llada_tiny.apply, llada_tiny.params, jnp.asarray(tokens),
                                      None, P, G, llada_tiny.ids.mask)
  positions = jnp.broadcast_to(P + jnp.arange(G), (3, G))
  loo = loo_logprobs(llada_tiny.apply, llada_tiny.params, jnp.asarray(tokens), None, positions,
                     llada_tiny.ids.mask)
  np.testing.assert_allclose(per_pos, loo, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(score, np.asarray(loo).mean(1), rtol=1e-5, atol=1e-5)


def test_a_chunk_hides_its_positions_together_and_only_them(llada_tiny, prompts):
  """Chunk c of 2 holds positions 0, 2, 4, ...: its row sees the odd ones, not the even."""
  tokens = jnp.asarray(_rows(prompts, 1))
  _, per_pos = chunk_verification(llada_tiny.apply, llada_tiny.params, tokens, None, P, 2,
                                  llada_tiny.ids.mask)
  row = tokens.at[0, P + jnp.arange(0, G, 2)].set(llada_tiny.ids.mask)
  logits = llada_tiny.forward(llada_tiny.params, row, None)[0, P:]
  logits = logits.at[:, llada_tiny.ids.mask].set(-jnp.inf)
  want = jax.nn.log_softmax(logits)[jnp.arange(G), tokens[0, P:]][0::2]
  np.testing.assert_allclose(np.asarray(per_pos)[0, 0::2], want, rtol=1e-5, atol=1e-5)


def test_only_the_answer_up_to_its_first_eos_is_scored(llada_tiny, prompts):
  eos = llada_tiny.ids.eos
  tokens = _rows(prompts, 2)
  tokens[0, P + 3:] = eos  # answer of 3 tokens, then EOS padding
  assert content_mask(jnp.asarray(tokens[:, P:]), eos).sum(1).tolist() == [4, G]
  score, per_pos = chunk_verification(llada_tiny.apply, llada_tiny.params, jnp.asarray(tokens),
                                      None, P, G, llada_tiny.ids.mask, eos)
  per_pos = np.asarray(per_pos)
  assert (per_pos[0, 4:] == 0).all() and (per_pos[0, :4] < 0).all()
  np.testing.assert_allclose(score[0], per_pos[0, :4].mean(), rtol=1e-6)
  no_eos = chunk_verification(llada_tiny.apply, llada_tiny.params, jnp.asarray(tokens), None,
                              P, G, llada_tiny.ids.mask)[0]
  assert not np.isclose(no_eos[0], score[0])  # the padding would have been scored
  np.testing.assert_allclose(no_eos[1], score[1], rtol=1e-6)  # no EOS: same


@pytest.mark.integration  # the shipped models
def test_chunked_verification_ranks_a_consistent_sudoku_above_a_swapped_one():
  """On the shipped Sudoku model, the default check (3 rows) accepts the model's own
  solved grids and rejects the same grids with two digits of their first row swapped (two
  columns break)."""
  from mro.loading import resolve_model
  from mro.loading import text_sampler as load_sampler
  from rewards.tasks import get_task
  sampler = load_sampler(resolve_model("default", "sudoku"))
  tok = sampler.tokenizer
  examples = get_task("sudoku").examples("test", limit=8)
  cfg = SamplerConfig(gen_length=24, steps=24, block_length=24)
  out, P = sampler.generate_tokens([e.prompt for e in examples], cfg)
  tokens = np.asarray(out.tokens)
  assert [g.text for g in sampler.decode(out, P)] == [e.target for e in examples]
  swapped = tokens.copy()
  for row in swapped:
    digits = [i for i in range(P, len(row)) if tok.decode([int(row[i])]).strip().isdigit()]
    a, b = next((i, j) for i in digits[:4] for j in digits[:4] if row[i] != row[j])
    row[a], row[b] = row[b], row[a]
  both = jnp.asarray(np.concatenate([tokens, swapped]))
  score = np.asarray(chunk_verification(sampler.apply, sampler.params, both, None, P, 3,
                                        tok.special.mask, tok.special.eos)[0])
  good, bad = score[:8], score[8:]
  accept = CascadeConfig().accept  # the default level separates them, with room
  assert good.min() > accept and bad.max() < 100 * accept, (good, bad)


# --- settings -----------------------------------------------------------------------------


def test_stages_parse_into_sampler_fields_with_steps_as_fractions():
  assert parse_stage("threshold=0.99") == {"threshold": 0.99}
  assert parse_stage("steps=L/2, threshold=none,remasking=margin") == {
      "steps": "L/2", "threshold": None, "remasking": "margin"}
  cfg = CascadeConfig(stages="threshold=0.9;steps=L/2,threshold=none", verify_chunks=2)
  first, second = cfg.resolve(BASE)
  assert (first.threshold, first.steps) == (0.9, 16)
  assert (second.threshold, second.steps) == (None, 8)
  assert CascadeConfig(stages=({"steps": 4}, {"threshold": None})).stages == (
      "steps=4", "threshold=none")


@pytest.mark.parametrize("fields, match", [
    (dict(stages=()), "empty"),
    (dict(stages=("steps",)), "field=value"),
    (dict(stages=("stepz=4",)), "'stepz' is not a sampler field"),
    (dict(stages=("steps=4,steps=8",)), "twice"),
    (dict(accept=float("nan")), "accept must be a finite number"),
    (dict(accept="high"), "accept must be a finite number"),
    (dict(verify_chunks=0), "verify_chunks must be >= 1"),
])
def test_bad_cascade_settings_are_refused_by_name(fields, match):
  with pytest.raises(ValueError, match=match):
    CascadeConfig(**fields)


@pytest.mark.parametrize("fields, match", [
    (dict(verify_chunks=17), "verify_chunks=17 is more than the 16"),
    (dict(stages=("block_length=5",)), "cascade stage 'block_length=5'"),
    (dict(stages=("steps=L/3",)), "not divisible"),
    (dict(stages=("gen_length=8,block_length=8,steps=8",)), "same gen_length"),
    (dict(stages=("temperature=nan",)), "cascade stage 'temperature=nan'"),
])
def test_stages_that_do_not_fit_the_sampler_are_refused_naming_the_stage(fields, match):
  with pytest.raises(ValueError, match=match):
    CascadeConfig(**fields).resolve(BASE)


def test_eval_options_of_the_cascade_need_search_cascade_and_exclude_search_options():
  cfg = EvalConfig.build("arith", search="cascade", accept=-0.5, verify_chunks=2,
                         stages="steps=4;steps=8", gen_length=16, steps="L")
  assert cfg.search is None and cfg.cascade.accept == -0.5 and cfg.cascade.stages == (
      "steps=4", "steps=8")
  with pytest.raises(ValueError, match=r"cascade option\(s\) \['accept'\] need --search cascade"):
    EvalConfig.build("arith", accept=-0.5)
  with pytest.raises(ValueError, match=r"\['k'\] do not apply to --search cascade"):
    EvalConfig.build("arith", search="cascade", k=4)
  with pytest.raises(ValueError, match="cascade stage 'block_length=5'"):
    EvalConfig.build("arith", search="cascade", stages="block_length=5", gen_length=16, steps="L")


def test_bucket_sizes_are_powers_of_two_capped_by_the_batch():
  assert [bucket(n, 12) for n in (1, 2, 3, 4, 5, 9, 12)] == [1, 2, 4, 4, 8, 12, 12]


# --- the cascade ----------------------------------------------------------------------------


def _plain(sampler, prompts, cfg, row_ids, seed=0):
  out, P = sampler.generate_tokens(prompts, cfg, seed=seed, row_ids=row_ids)
  return [g.text for g in sampler.decode(out, P)], np.asarray(out.nfe_per_row)


def test_an_answer_above_the_level_is_final_after_the_first_stage(text_sampler, arith_prompts):
  cfg = CascadeConfig(stages=STAGES, accept=-1e9, verify_chunks=2)
  results = run_cascade(text_sampler, arith_prompts, BASE, cfg, row_ids=np.arange(5))
  texts, nfe = _plain(text_sampler, arith_prompts, cfg.resolve(BASE)[0], np.arange(5))
  assert [r.text for r in results] == texts
  assert [r.nfe for r in results] == (nfe + 2).tolist()
  assert {(r.stage, r.stages_run) for r in results} == {(0, 1)}


@pytest.mark.parametrize("stages", [STAGES, STAGES[::-1]])
def test_answers_below_the_level_run_every_stage_and_keep_the_best_scored(
    text_sampler, arith_prompts, stages):
  """On the random model more steps score higher, so the kept stage is the 16-step one in
  either order: the later stage is not simply taken."""
  cfg = CascadeConfig(stages=stages, accept=1e9, verify_chunks=2)
  results = run_cascade(text_sampler, arith_prompts, BASE, cfg, row_ids=np.arange(5))
  per_stage = [_plain(text_sampler, arith_prompts, c, np.arange(5), seed=s)  # stage s: seed + s
               for s, c in enumerate(cfg.resolve(BASE))]
  want_nfe = sum(n for _, n in per_stage) + 2 * len(stages)
  assert [r.nfe for r in results] == want_nfe.tolist() == [4 + 16 + 4] * 5
  for i, r in enumerate(results):
    assert r.stages_run == 2 and len(r.scores) == 2
    assert r.stage == int(np.argmax(r.scores)) == stages.index("steps=16")
    assert r.text == per_stage[r.stage][0][i]


def test_a_row_gets_the_same_result_alone_as_in_a_batch_where_others_escalate(text_sampler,
                                                                             arith_prompts):
  width = text_sampler.encode_prompts(arith_prompts)[0].shape[1]  # as the runner: one width
  first = run_cascade(text_sampler, arith_prompts, BASE,
                      CascadeConfig(stages=STAGES, accept=1e9, verify_chunks=2),
                      row_ids=np.arange(5), width=width)
  ranked = np.sort([r.scores[0] for r in first])
  level = float(ranked[1:3].mean())  # between two rows' scores: some stop, some go on
  cfg = CascadeConfig(stages=STAGES, accept=level, verify_chunks=2)
  batch = run_cascade(text_sampler, arith_prompts, BASE, cfg, row_ids=np.arange(5),
                      width=width)
  assert {r.stages_run for r in batch} == {1, 2}
  for i, p in enumerate(arith_prompts):
    (alone,) = run_cascade(text_sampler, [p], BASE, cfg, row_ids=[i], width=width)
    assert (alone.text, alone.nfe, alone.stage) == (batch[i].text, batch[i].nfe, batch[i].stage)
    np.testing.assert_allclose(alone.scores, batch[i].scores, rtol=1e-5, atol=1e-6)


def test_eval_records_the_cascade_its_stage_samplers_and_each_prompts_passes(model_dir,
                                                                           tmp_path):
  import json

  from mro.evaluation import report
  out = tmp_path / "res.jsonl"
  cfg = EvalConfig.build("arith", search="cascade", stages=";".join(STAGES), accept=1e9,
                         verify_chunks=2, gen_length=16, steps="L", limit=5, batch_size=4,
                         temperature=1.0, out=str(out))
  (record,) = run_eval(model_dir, cfg)
  assert record["search"]["method"] == "cascade"
  assert [s["steps"] for s in record["search"]["stage_samplers"]] == [4, 16]
  gens = [json.loads(x) for x in report.generations_path(out).read_text().splitlines()]
  assert [g["search"]["stages_run"] for g in gens] == [2] * 5
  assert record["nfe_per_prompt"] == np.mean([g["search"]["nfe"] for g in gens]) == 24
  assert record["stages_run"] == [1.0, 1.0]
  assert report.search_label(record) == "cascade:2"
  assert report.setting_label(record).startswith("verified cascade (steps=4 → steps=16;")
  other = EvalConfig.build("arith", search="cascade", stages=";".join(STAGES), accept=-1e9,
                           verify_chunks=2, gen_length=16, steps="L", limit=5, batch_size=4,
                           temperature=1.0)
  second = run_eval(model_dir, other)[0]
  assert evaluate_key(record) != evaluate_key(second)
  from mro.evaluation import plot
  assert len(plot.curves([record, second], "nfe")) == 1  # accept levels: one cost curve
  assert len(plot.curves([record, second], "steps")) == 2


def evaluate_key(record):
  from mro.evaluation.runner import setting_key
  return setting_key(record)


@pytest.mark.integration  # the shipped models
def test_mro_sample_runs_the_cascade_on_the_shipped_model_and_names_misplaced_options():
  from mro.sample import sample
  from rewards.tasks import get_task
  examples = get_task("sudoku").examples("test", limit=2)
  result = sample("default", [e.prompt for e in examples], task="sudoku", search="cascade")
  assert result.texts == [e.target for e in examples]
  assert result.cascade == CascadeConfig() and len(result.prompt_nfe) == 2
  assert min(result.prompt_nfe) >= 1 + CascadeConfig().verify_chunks
  with pytest.raises(ValueError, match=r"\['accept'\] need --search cascade"):
    sample("default", ["Sudoku 0040402310003014"], task="sudoku", cascade_fields={"accept": -1})
  with pytest.raises(ValueError, match="do not apply to --search cascade"):
    sample("default", ["Sudoku 0040402310003014"], task="sudoku", search="cascade",
           search_fields={"k": 2})


def test_two_sampled_stages_with_the_same_settings_draw_different_answers(text_sampler,
                                                                          arith_prompts):
  cfg = CascadeConfig(stages=("steps=8", "steps=8"), accept=1e9, verify_chunks=2)
  (result,) = run_cascade(text_sampler, arith_prompts[:1], BASE, cfg)
  assert result.scores[0] != result.scores[1]
