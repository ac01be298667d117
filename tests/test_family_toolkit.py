"""The whole toolkit on a tiny random Dream and a tiny random LLaDA-MoE: every verb (`mro
sample/eval/diagnose/reject-sample/rl/train`), the MRO search, the cascade and a GRPO-family
objective. The perplexity scorer stays an ordinary causal model (LLaDA-family)."""

import json

import pytest
from flax import nnx

from models.checkpoints import save_hf
from models.config import preset
from models.hf_config import load_hf_config
from models.tokenizers import train_sentencepiece
from models.transformer import init_model
from mro import cli
from rewards.tasks import get_task
from tiny_models import mro_cli_sets

FAMILIES = ("dream", "lladamoe")
SHAPES = dict(d_model=32, n_layers=2, n_heads=2, mlp_hidden=64, max_seq_len=64)
FAMILY_SHAPES = {
    "dream": ("tiny_dream", dict(n_kv_heads=1)),  # grouped KV heads, as Dream-7B
    "lladamoe": ("tiny_lladamoe", dict(n_kv_heads=2, n_experts=4, experts_per_token=2,
                                       expert_hidden=16, dense_layers=(0,))),
}
MODEL_TYPES = {"dream": "Dream", "lladamoe": "lladamoe"}


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
  """{family: {"mdm": dir, "scorer": dir}}: a random tiny mask predictor of each family and
  a causal LLaDA-format scorer, all sharing one Sudoku tokenizer."""
  root = tmp_path_factory.mktemp("families")
  examples = get_task("sudoku").examples("train", limit=300)
  tok = train_sentencepiece([t for e in examples for t in (e.prompt, e.target)], root / "tok",
                            64, user_symbols=("<answer>", "</answer>"), byte_fallback=False,
                            hard_vocab_limit=False)
  scorer_cfg = preset("tiny", vocab_size=tok.vocab_size, causal=True, n_kv_heads=2, **SHAPES)
  save_hf(root / "scorer", nnx.split(init_model(scorer_cfg, seed=2))[1], scorer_cfg,
          tok.special)
  tok.save(root / "scorer")
  dirs = {}
  for family, (name, extra) in FAMILY_SHAPES.items():
    cfg = preset(name, vocab_size=tok.vocab_size, **SHAPES, **extra)
    save_hf(root / family, nnx.split(init_model(cfg, seed=1))[1], cfg, tok.special)
    tok.save(root / family)
    dirs[family] = {"mdm": root / family, "scorer": root / "scorer"}
  return dirs


def _run(capsys, *argv):
  code = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  assert code == 0, err
  return out, err


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_directory_is_in_the_familys_own_format(family_models, family):
  d = family_models[family]["mdm"]
  assert json.loads((d / "config.json").read_text())["model_type"] == MODEL_TYPES[family]
  assert load_hf_config(d)[0].family == family


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_with_the_mro_search_runs(family_models, family, capsys):
  m = family_models[family]
  prompt = get_task("sudoku").examples("test", limit=1)[0].prompt
  out, err = _run(capsys, "sample", "--model", m["mdm"], "--prompt", prompt, "--task",
                  "sudoku", "--gen-length", 24, "--steps", 4, "--search", "mro", "--k", 2,
                  "--group-steps", 2, "--scorer", m["scorer"])
  assert len(out.splitlines()) == 1 and "forward passes per prompt" in err


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_runs_plain_with_the_dream_schedule_and_as_a_cascade(family_models, family,
                                                                   capsys, tmp_path):
  m, out = family_models[family], tmp_path / "r.jsonl"
  common = ["eval", "--model", m["mdm"], "--task", "sudoku", "--limit", 4, "--batch-size", 4,
            "--out", out]
  _run(capsys, *common, "--steps", "L/4", "--schedule", "dream", "--remasking", "entropy")
  _run(capsys, *common, "--search", "cascade", "--stages", "threshold=0.9;steps=L/2",
       "--steps", "L/4")
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert records[0]["sampler"]["schedule"] == "dream"
  assert records[1]["search"]["method"] == "cascade"


@pytest.mark.parametrize("family", FAMILIES)
def test_diagnose_ranks_candidates_with_every_reward(family_models, family, capsys):
  m = family_models[family]
  out, _ = _run(capsys, "diagnose", "--model", m["mdm"], "--task", "sudoku", "--limit", 2,
                "--steps", 4, "--k", 2, "--group-steps", 2, "--scorer", m["scorer"])
  for reward in ("tv@1", "ppl", "q@vote"):
    assert f"| {reward} |" in out


@pytest.mark.parametrize("family, verb, method", [
    ("dream", "reject-sample", None), ("lladamoe", "reject-sample", None),
    ("dream", "rl", "mro"), ("lladamoe", "rl", "diffu_grpo"),
])
def test_reject_sampling_and_rl_train_and_export_in_the_familys_format(
    family_models, family, verb, method, capsys, tmp_path):
  sets = mro_cli_sets(family_models[family])
  if method is not None:
    sets += ["--set", f"rl.method={method}", "--set", "rewards.use=tv,q"]
  out, _ = _run(capsys, verb, "--config", "mro_sudoku", "--workdir", tmp_path / "wd", *sets)
  assert "trained to step 4" in out
  for exported in ("best", "model"):
    hf = json.loads((tmp_path / "wd" / exported / "config.json").read_text())
    assert hf["model_type"] == MODEL_TYPES[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_train_from_scratch_then_sample_from_the_workdir(family, tiny_train_sets, capsys,
                                                         tmp_path):
  sets = [s for s in tiny_train_sets if not s.startswith(("train.steps", "model.n_kv"))]
  sets += ["train.steps=3", f"model.preset={FAMILY_SHAPES[family][0]}", "model.n_kv_heads=1"]
  if family == "lladamoe":
    sets += ["model.n_experts=4", "model.expert_hidden=16", "model.dense_layers=[1]"]
  argv = ["train", "--config", "tiny", "--workdir", tmp_path / "wd"]
  for item in sets:
    argv += ["--set", item]
  _run(capsys, *argv)
  exported = json.loads((tmp_path / "wd" / "model" / "config.json").read_text())
  assert exported["model_type"] == MODEL_TYPES[family]
  out, _ = _run(capsys, "sample", "--model", tmp_path / "wd", "--prompt", "12+34=",
                "--gen-length", 16, "--steps", 4, "--schedule", "dream")
  assert len(out.splitlines()) == 1
