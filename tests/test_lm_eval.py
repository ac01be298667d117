"""lm-evaluation-harness on our models (mro/evaluation/lm_harness.py, likelihood.py).

Offline: the tasks are the YAML files of tests/lm_eval_tasks/ reading local JSON lines,
and every test runs with socket connections refused and recorded (`no_network`), so any
attempt to reach a hub fails the test. The likelihood is checked against the exact
masked-diffusion bound enumerated over every mask subset on the reference fixture model.
"""

import contextlib
import io
import itertools
import json
import os
import socket
import types
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("CI"):
  import lm_eval  # noqa: F401  (CI installs the [lm-eval] extra: a missing one must fail)
lm_eval = pytest.importorskip("lm_eval")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from models.checkpoints import save_hf  # noqa: E402
from models.config import preset  # noqa: E402
from models.tokenizers import LLADA_CHAT_TEMPLATE, build_hf_tokenizer  # noqa: E402
from models.transformer import init_model  # noqa: E402
from flax import nnx  # noqa: E402
from mro import cli  # noqa: E402
from mro.evaluation import lm_harness  # noqa: E402
from mro.evaluation.likelihood import greedy_matches, mc_loglikelihood  # noqa: E402
from mro.evaluation.report import generations_path  # noqa: E402
from mro.evaluation.runner import EvalConfig, run_eval  # noqa: E402
from mro.loading import load_inference_model  # noqa: E402
from mro.sampling.schedule import SamplerConfig  # noqa: E402
from mro.sampling.textgen import TextSampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "lm_eval_tasks"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Refuses (and records) every outgoing socket connection during the test."""
  attempts = []

  def refuse(sock, address, *args):
    attempts.append(address)
    raise OSError(f"test_lm_eval: network access attempted: {address}")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket.socket, "connect_ex", refuse)
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.chdir(ROOT)  # the task YAMLs name their data relative to the repository
  yield attempts
  assert not attempts, f"lm-eval or the mro model tried to reach the network: {attempts}"


@pytest.fixture(scope="module")
def task_manager():
  return TaskManager(include_path=str(TASKS), include_defaults=False)


def evaluate(model_args, tasks, task_manager, **kw):
  return simple_evaluate(model="mro", model_args=model_args, tasks=tasks,
                         task_manager=task_manager, **kw)


def test_the_task_data_is_what_make_data_writes():
  import importlib.util
  spec = importlib.util.spec_from_file_location("make_data", TASKS / "make_data.py")
  make_data = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_data)
  assert (TASKS / "sudoku.jsonl").read_text() == make_data.as_jsonl(make_data.sudoku_rows())
  assert (TASKS / "countdown_mc.jsonl").read_text() == make_data.as_jsonl(
      make_data.countdown_rows())


def test_generation_accuracy_through_lm_eval_equals_mro_eval(task_manager, tmp_path):
  """The shipped Sudoku model at L/8 steps (it makes mistakes there): same examples, same
  sampler, the same answers one by one and the same accuracy."""
  n, steps = 12, "L/8"
  out = evaluate({"model": "default", "task": "sudoku", "steps": steps}, ["mro_sudoku"],
                 task_manager, limit=n, batch_size=5, log_samples=True)
  samples = out["samples"]["mro_sudoku"]
  results = tmp_path / "eval.jsonl"
  record, = run_eval("default", EvalConfig.build(task="sudoku", steps=steps, limit=n,
                                                 threshold="none",  # the recorded sampler's
                                                 batch_size=4, out=str(results)),
                     progress=False)
  ours = {g["index"]: g for g in map(json.loads,
                                      generations_path(results).read_text().splitlines())}
  assert sorted(s["doc_id"] for s in samples) == sorted(ours) == list(range(n))
  for s in samples:
    mine = ours[s["doc_id"]]
    assert s["doc"]["prompt"] == mine["prompt"]
    assert s["resps"][0][0] == mine["output"].split("</answer>")[0]
    assert s["exact_match"] == mine["score"]["correct"]
  assert 0 < record["accuracy"] < 1, "pick a setting where the model makes some mistakes"
  assert out["results"]["mro_sudoku"]["exact_match,answer"] == pytest.approx(
      record["accuracy"])


def test_generate_until_returns_requests_in_order_under_sorting_and_padding(model_dir):
  """7 prompts of different lengths, scrambled, in batches of 3 (the last one padded),
  sampled at temperature 1: each answer is the one its prompt gets alone (its random
  stream is keyed by its request index), cut at its own stop string."""
  lm = lm_harness.MROLM(model=str(model_dir), gen_length=8, steps=8, block_length=8,
                        temperature=1.0, seed=5, batch_size=3)
  contexts = ["Make 24 from 1,2", "Sudoku 1", "12+", "Sudoku 00404023", "7",
              "Make 091 from 5", "3*4"]
  alone = TextSampler(*_net(model_dir))
  lengths = [len(alone.tokenizer.encode(c)) for c in contexts]
  assert len(set(lengths)) > 4 and max(lengths) <= 16  # one padded width: 16
  cfg = SamplerConfig(gen_length=8, steps=8, block_length=8, temperature=1.0)
  full = [alone.generate([c], cfg, seed=5, row_ids=[i], width=16)[0].text
          for i, c in enumerate(contexts)]
  stops = [[t[3:5]] if len(t) > 5 else [] for t in full]
  requests = [types.SimpleNamespace(args=(c, {"until": s})) for c, s in zip(contexts, stops)]
  got = lm.generate_until(requests)
  want = [t[:t.find(s[0])] if s else t for t, s in zip(full, stops)]
  assert got == want
  assert any(len(g) < len(t) for g, t in zip(got, full)), "no stop string was applied"
  assert lm.stats["generate_until"]["nfe_per_prompt"] == 8


def _net(model_dir):
  net, model_cfg, _, tok = load_inference_model(model_dir)
  return net, model_cfg, tok


def _exact_bound(llada_tiny, context, cont):
  """Σ_k (1/k) mean over |S|=k of Σ_{i∈S} log p(x_i | c, x with S masked), by
  enumerating every subset S, and each k's population variance of the inner sum."""
  T, mask = len(cont), llada_tiny.ids.mask
  per_k = {k: [] for k in range(1, T + 1)}
  for k in range(1, T + 1):
    for S in itertools.combinations(range(T), k):
      seq = np.array(list(context) + list(cont))
      seq[[len(context) + i for i in S]] = mask
      logits = llada_tiny.logits(seq[None])[0].astype(np.float64)
      logp = logits - logits.max(-1, keepdims=True)
      logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
      per_k[k].append(sum(logp[len(context) + i, cont[i]] for i in S))
  exact = sum(np.mean(v) / k for k, v in per_k.items())
  return exact, {k: np.var(v) for k, v in per_k.items()}


def test_loglikelihood_is_within_mc_error_of_the_exact_bound(llada_tiny, prompts):
  """T = 3: the estimate (96 samples, every k the same share) is within 4 standard
  errors of the enumerated bound; requests of different lengths share padded batches."""
  mc_num = 96
  pairs = [(prompts[0][:5].tolist(), [7, 100, 31]), (prompts[1].tolist(), [250, 3, 64]),
           (prompts[2][:9].tolist(), [12, 12, 200])]
  est = mc_loglikelihood(llada_tiny.apply, llada_tiny.params, pairs, mask_id=llada_tiny.ids.mask,
                         pad_id=llada_tiny.ids.pad, max_seq_len=llada_tiny.cfg.max_seq_len,
                         mc_num=mc_num, batch_size=40, seed=1)
  for (context, cont), e in zip(pairs, est):
    exact, var_k = _exact_bound(llada_tiny, context, cont)
    m = mc_num // len(cont)  # samples per k
    se = np.sqrt(sum(v / k**2 / m for k, v in var_k.items()))
    assert abs(e.logprob - exact) <= 4 * se + 1e-4 * abs(exact), (e, exact, se)
    assert se > 0.01  # the check is not vacuous: T = 3 has sampling error


def test_a_one_token_continuation_has_the_exact_loglikelihood_in_request_order(llada_tiny,
                                                                               prompts):
  """T = 1 has one mask subset, so every estimate is exact: per request, whatever the
  sorting by length and the padding of the batches."""
  pairs = [(prompts[i % 3][:n].tolist(), [t]) for i, (n, t) in
           enumerate([(3, 40), (12, 7), (6, 250), (1, 99), (9, 31)])]
  est = mc_loglikelihood(llada_tiny.apply, llada_tiny.params, pairs, mask_id=llada_tiny.ids.mask,
                         pad_id=llada_tiny.ids.pad, max_seq_len=llada_tiny.cfg.max_seq_len,
                         mc_num=3, batch_size=4, seed=0)
  exact = [_exact_bound(llada_tiny, c, x)[0] for c, x in pairs]
  np.testing.assert_allclose([e.logprob for e in est], exact, rtol=2e-5)
  assert all(e.stderr < 1e-4 * abs(x) for e, x in zip(est, exact))


def test_is_greedy_is_true_only_for_the_greedy_continuation(llada_tiny, prompts):
  """LLaDA's check, re-stated in NumPy: T steps, each committing the most confident
  masked position's argmax."""
  context, T = prompts[0].tolist(), 4
  seq = np.array(context + [llada_tiny.ids.mask] * T)
  for _ in range(T):
    logits = llada_tiny.logits(seq[None])[0].astype(np.float64)
    logits[:, llada_tiny.ids.mask] = -np.inf
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    open_ = np.flatnonzero(seq == llada_tiny.ids.mask)
    best = open_[np.argmax(p[open_].max(-1))]
    seq[best] = np.argmax(p[best])
  greedy = seq[len(context):].tolist()
  other = greedy[:2] + [(greedy[2] + 1) % 280] + greedy[3:]
  sampler = TextSampler(llada_tiny.model, llada_tiny.cfg,
                        types.SimpleNamespace(special=llada_tiny.ids))
  assert greedy_matches(sampler, [(context, greedy), (context, other), ([], greedy),
                                  (context, [])], batch_size=3) == [True, False, False, True]


def test_multiple_choice_task_runs_offline_through_loglikelihood(model_dir, task_manager):
  out = evaluate({"model": str(model_dir), "mc_num": 4, "mc_batch_size": 8},
                 ["mro_countdown_mc"], task_manager, limit=3)
  acc = out["results"]["mro_countdown_mc"]["acc,none"]
  assert 0 <= acc <= 1
  stats = out["config"]["mro_stats"]["loglikelihood"]
  assert stats["requests"] == 12 and stats["nfe_rows"] == 48


def test_mro_lm_eval_verb_runs_a_local_yaml_task(model_dir):
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    code = cli.main(["lm-eval", "--include_path", str(TASKS), "--tasks", "mro_sudoku",
                     "--model_args", f"model={model_dir},gen_length=8,steps=4,"
                     "block_length=8", "--limit", "2", "--batch_size", "2"])
  assert code == 0
  table = stdout.getvalue()
  assert "mro_sudoku" in table and "exact_match" in table


def test_chat_template_is_the_model_tokenizer_s_own(tmp_path, task_manager):
  texts = ["Sudoku 0040402310003014", "<answer>2341412314323214</answer>"] * 20
  tok = build_hf_tokenizer(tmp_path, texts, 300, chat_template=LLADA_CHAT_TEMPLATE)
  cfg = preset("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2,
               n_kv_heads=2, mlp_hidden=64, max_seq_len=96)
  save_hf(tmp_path, nnx.state(init_model(cfg, seed=0)), cfg, tok.special)
  out = evaluate({"model": str(tmp_path), "gen_length": 8, "steps": 8, "block_length": 8},
                 ["mro_sudoku"], task_manager, limit=1, log_samples=True,
                 apply_chat_template=True)
  (prompt, gen_kwargs), = out["samples"]["mro_sudoku"][0]["arguments"]
  assert prompt == tok.apply_chat_template([{"role": "user",
                                             "content": "Sudoku 0040402310003014"}])


def test_bad_model_args_are_named_and_rolling_likelihood_is_refused(model_dir):
  with pytest.raises(ValueError, match="unknown model_args.*gen_lenght"):
    lm_harness.MROLM(model=str(model_dir), gen_lenght=8)
  with pytest.raises(ValueError, match="steps"):
    lm_harness.MROLM(model=str(model_dir), steps="L/3")
  with pytest.raises(ValueError, match="temperature='hot'"):
    lm_harness.MROLM(model=str(model_dir), temperature="hot")
  with pytest.raises(ValueError, match="model_args task: .*sudok"):
    lm_harness.MROLM(model="default", task="sudok")
  with pytest.raises(ValueError, match="model=PATH"):
    lm_harness.MROLM(gen_length=8)
  with pytest.raises(ValueError, match="need search=mro"):
    lm_harness.MROLM(model=str(model_dir), k=4)
  lm = lm_harness.MROLM(model=str(model_dir), gen_length=8, steps=8, block_length=8)
  with pytest.raises(lm_harness.RollingLoglikelihoodUnsupported, match="loglikelihood_rolling"):
    lm.loglikelihood_rolling([])
  with pytest.raises(ValueError, match="no chat template"):
    lm.apply_chat_template([{"role": "user", "content": "hi"}])
  long = types.SimpleNamespace(args=("1+" * 60, {"until": []}))
  with pytest.raises(ValueError, match="request 0: a prompt of"):
    lm.generate_until([long])


def test_model_args_given_to_lm_eval_win_over_its_own_batch_size(model_dir):
  lm = lm_harness.MROLM.create_from_arg_string(
      f"model={model_dir},batch_size=5,gen_length=8,steps=8,block_length=8",
      {"batch_size": 1, "device": "cuda:0", "max_batch_size": None})
  assert lm.settings.batch_size == 5
  assert lm.settings.sampler.gen_length == 8
  json.dumps(lm.get_model_info())  # goes into lm-eval's results file


def test_the_mro_model_on_a_mesh_gives_the_single_device_answers(model_dir):
  args = dict(model=str(model_dir), gen_length=8, steps=8, block_length=8,
              temperature=1.0, batch_size=4, mc_num=4, mc_batch_size=8)
  gen = [types.SimpleNamespace(args=(c, {"until": []})) for c in ("12+", "Sudoku 1", "7")]
  ll = [types.SimpleNamespace(args=("12+3=", "15")), types.SimpleNamespace(args=("7", "+1"))]
  one = lm_harness.MROLM(**args)
  sharded = lm_harness.MROLM(**args, mesh="data=2,fsdp=2")
  assert sharded.generate_until(gen) == one.generate_until(gen)
  np.testing.assert_allclose([r[0] for r in sharded.loglikelihood(ll)],
                             [r[0] for r in one.loglikelihood(ll)], rtol=1e-5)
  with pytest.raises(ValueError, match="model_args batch_size: batch size 3"):
    lm_harness.MROLM(**{**args, "batch_size": 3}, mesh="data=2")
