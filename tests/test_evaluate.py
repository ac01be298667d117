"""The benchmark runner (mro/evaluation/runner.py), protocols and plot, on a random tiny model.

A random model scores ~0: these tests check the machinery (records, generations,
batch invariance, protocol resolution, crash safety, bad input before compiling).
Compile budget: the settings of `eval_run` (conftest.py: gen 16; steps 16, 4, 2; batch 3),
which the crash and append tests reuse, plus one each for batch 8, threshold mode and the
in-memory model.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mro.sampling.sampler as sampler
from models.tokenizers import LLADA_CHAT_TEMPLATE, build_hf_tokenizer, load_tokenizer
from mro import loading, paths
from mro.evaluation import runner as evaluate
from mro.evaluation import report
from mro.evaluation import settings as eval_settings
from mro.evaluation.runner import EvalConfig, run_eval
from mro.evaluation.protocols import Protocol, get_protocol, protocol_names
from rewards.tasks import Example, get_task
from tiny_models import EVAL_BASE as BASE



@pytest.fixture
def no_compile(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("reached the compiled sampler")

  monkeypatch.setattr(sampler, "generate_compiled", fail)


# --- records and generations ---------------------------------------------------------


def test_each_steps_value_appends_one_line_with_the_resolved_config(eval_run, model_dir):
  cfg, records, lines, _ = eval_run
  assert lines == records
  assert [r["steps"] for r in lines] == [16, 4, 2]  # L, L/4, 2 with gen_length 16
  for r in lines:
    assert r["model_path"] == str(model_dir.resolve()) and r["task"] == "arith"
    assert r["model_digest"] == loading.model_digest(model_dir) and r["scorer_digest"] is None
    assert r["commit"] == paths.git_commit()
    assert (r["protocol"], r["style"], r["split"], r["limit"]) == ("compact", "compact",
                                                                   "test", 7)
    assert r["sampler"] == {"gen_length": 16, "steps": r["steps"], "block_length": 16,
                            "temperature": 1.0, "remasking": "low_confidence",
                            "threshold": 0.999, "cfg_scale": 0.0, "factor": None,
                            "fixed_steps": True, "cache": "none", "refresh_every": None,
                            "stop_at_eos": False, "correct_below": None, "correct_rows": None,
                            "correct_max": 1,
                            "schedule": "llada", "schedule_eps": 1e-3}
    assert (r["seed"], r["batch_size"], r["n"], r["batches"]) == (3, 3, 7, 3)
    assert r["nfe"] == r["steps"] * 3 and r["denoising_steps"] == r["steps"]
    assert r["timestamp"] and r["seconds"] >= r["sample_seconds"] > 0
    assert r["tokens_per_second"] == pytest.approx(7 * 16 / r["sample_seconds"])
    assert {"correct", "digit_accuracy", "answered", "format"} <= set(r["metrics"])
    assert r["accuracy"] == r["metrics"]["correct"]
  assert len({r["setting_id"] for r in lines}) == 3
  assert not Path(cfg.out + ".lock").exists()  # the results file's lock went with the run


def test_generations_file_holds_every_example_of_every_setting_with_a_score_that_recomputes(
    eval_run):
  cfg, records, _, gens = eval_run
  assert len(gens) == 7 * len(records)
  task = get_task("arith")
  examples = {ex.id: ex for ex in task.examples("test", limit=7)}
  for record in records:
    mine = [g for g in gens if g["setting_id"] == record["setting_id"]]
    assert sorted(g["example_id"] for g in mine) == sorted(examples)
    assert np.mean([g["score"]["correct"] for g in mine]) == record["accuracy"]
    assert np.mean([g["format_ok"] for g in mine]) == record["format_rate"]
  for g in gens:
    ex = examples[g["example_id"]]
    assert g["prompt"] == ex.prompt and g["reference_answer"] == ex.answer
    assert task.score(ex, g["output"]) == g["score"]
    assert task.extract_answer(g["output"]) == g["extracted_answer"]
    assert task.format_ok(g["output"], style="compact") == g["format_ok"]


def outputs_of(gens, setting_id):
  return {g["example_id"]: g["output"] for g in gens if g["setting_id"] == setting_id}


def test_outputs_do_not_depend_on_the_batch_size(eval_run, model_dir, tmp_path):
  _, records, _, gens = eval_run
  at_batch_3 = outputs_of(gens, records[1]["setting_id"])  # steps 4
  assert len(set(at_batch_3.values())) > 1  # temperature 1: the rows really differ
  out = tmp_path / "b8.jsonl"
  again = run_eval(model_dir, EvalConfig.build(**{**BASE, "steps": "4", "batch_size": 8},
                                         out=str(out)))
  assert (again[0]["batches"], again[0]["nfe"]) == (1, 4)  # 7 rows + 1 padding row
  gens8 = [json.loads(x) for x in evaluate.generations_path(out).read_text().splitlines()]
  assert len(gens8) == 7
  assert outputs_of(gens8, again[0]["setting_id"]) == at_batch_3
  assert again[0]["accuracy"] == records[1]["accuracy"]


def test_threshold_mode_records_the_forward_passes_the_sampler_took(text_sampler):
  cfg = EvalConfig.build(**{**BASE, "steps": (), "threshold": 0.5, "limit": 4, "batch_size": 2})
  (record,) = run_eval(text_sampler, cfg)
  assert record["sampler"]["threshold"] == 0.5 and record["batches"] == 2
  assert 2 <= record["nfe"] <= 2 * 16  # at least one step per batch, at most one per token
  assert record["denoising_steps"] == record["nfe"] / 2


def test_a_crash_in_the_second_setting_keeps_the_first_line_intact(model_dir, tmp_path,
                                                                  monkeypatch):
  real = evaluate._run_setting
  calls = []

  def crash_on_second(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise RuntimeError("killed")
    return real(*args, **kwargs)

  monkeypatch.setattr(evaluate, "_run_setting", crash_on_second)
  out = tmp_path / "res.jsonl"
  with pytest.raises(RuntimeError, match="killed"):
    run_eval(model_dir, EvalConfig.build(**BASE, out=str(out)))
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  assert [r["steps"] for r in lines] == [16]
  gens = evaluate.generations_path(out).read_text().splitlines()
  assert len(gens) == 7 and all(json.loads(g)["steps"] == 16 for g in gens)


def test_a_rerun_skips_recorded_settings_and_force_appends_them_again(eval_run, model_dir,
                                                                       tmp_path, no_compile):
  out = tmp_path / "res.jsonl"
  cfg = EvalConfig.build(**{**BASE, "steps": "2,4"}, out=str(out))
  _, records, lines, _ = eval_run  # the same settings, recorded in eval_run's own file
  out.write_text("".join(json.dumps(r) + "\n" for r in lines[1:]) + '{"torn": ')
  again = run_eval(model_dir, cfg)  # both recorded already: nothing compiles
  assert [r["setting_id"] for r in again] == [lines[2]["setting_id"], lines[1]["setting_id"]]
  assert len(out.read_text().splitlines()) == 3
  other_seed = EvalConfig.build(**{**BASE, "steps": "2", "seed": 4}, out=str(out))
  with pytest.raises(AssertionError, match="reached the compiled sampler"):
    run_eval(model_dir, other_seed)  # a different resolved config is not skipped


def test_a_torn_last_line_is_set_aside_and_a_rerun_finds_the_finished_record(
    eval_run, model_dir, tmp_path, monkeypatch):
  out = tmp_path / "res.jsonl"
  gens = evaluate.generations_path(out)
  out.write_text('{"setting_id": "torn", "accur')  # a kill or a full disk mid-write
  gens.write_text('{"setting_id": "torn", "ste')
  cfg = EvalConfig.build(**{**BASE, "steps": "2"}, out=str(out))
  first = run_eval(model_dir, cfg)  # steps 2 compiled by eval_run already
  monkeypatch.setattr(sampler, "generate_compiled", lambda *a, **k: pytest.fail("re-ran"))
  again = run_eval(model_dir, cfg)
  assert [r["setting_id"] for r in again] == [first[0]["setting_id"]]
  assert len(out.read_text().splitlines()) == 1
  assert len(gens.read_text().splitlines()) == first[0]["n"]
  assert all("setting_id" in json.loads(g) for g in gens.read_text().splitlines())
  assert "torn" in (tmp_path / "res.jsonl.torn").read_text()


def test_a_data_file_replaced_at_the_same_path_is_run_again(model_dir, tmp_path, monkeypatch):
  data, out = tmp_path / "cd.jsonl", tmp_path / "res.jsonl"
  rows = ['{"input": "3,5,8", "output": "16"}\n', '{"input": "2,7,9", "output": "23"}\n']
  data.write_text("".join(rows))
  cfg = EvalConfig.build(task="countdown", data=str(data), steps="2", gen_length=16,
                         batch_size=2, out=str(out))
  first = run_eval(model_dir, cfg)
  assert first[0]["data_sha256"] and first[0]["n"] == 2
  data.write_text("".join(rows))  # rewritten, the same content: still recorded
  monkeypatch.setattr(sampler, "generate_compiled", lambda *a, **k: pytest.fail("re-ran"))
  assert run_eval(model_dir, cfg)[0]["setting_id"] == first[0]["setting_id"]
  data.write_text(rows[1])  # replaced: other content at the same path
  monkeypatch.undo()
  again = run_eval(model_dir, cfg)
  assert again[0]["setting_id"] != first[0]["setting_id"] and again[0]["n"] == 1
  assert again[0]["data_sha256"] != first[0]["data_sha256"]


def test_results_written_before_a_sampler_option_existed_are_still_skipped(
    eval_run, model_dir, tmp_path, no_compile):
  out = tmp_path / "res.jsonl"
  _, _, lines, _ = eval_run
  old = [{**r, "sampler": {k: v for k, v in r["sampler"].items()
                           if k not in ("schedule", "schedule_eps")}} for r in lines]
  out.write_text("".join(json.dumps(r) + "\n" for r in old))
  again = run_eval(model_dir, EvalConfig.build(**{**BASE, "steps": "2"}, out=str(out)))
  assert [r["setting_id"] for r in again] == [lines[2]["setting_id"]]
  with pytest.raises(AssertionError, match="reached the compiled sampler"):
    run_eval(model_dir, EvalConfig.build(**{**BASE, "steps": "2", "schedule": "dream"},
                                         out=str(out)))  # not the default: not skipped


def test_the_resume_key_follows_the_models_content_not_its_path(eval_run, model_dir,
                                                                tmp_path, no_compile):
  """A copy of the model elsewhere (a fresh clone) resumes from the recorded rows; the same
  path holding other weights (a retrained model) does not reuse them."""
  out = tmp_path / "res.jsonl"
  _, _, lines, _ = eval_run
  out.write_text(json.dumps(lines[2]) + "\n")  # steps 2
  cfg = EvalConfig.build(**{**BASE, "steps": "2"}, out=str(out))
  copy = shutil.copytree(model_dir, tmp_path / "elsewhere" / "model")
  again = run_eval(copy, cfg)
  assert [r["setting_id"] for r in again] == [lines[2]["setting_id"]]
  weights = copy / "model.safetensors"
  data = bytearray(weights.read_bytes())
  data[-4:] = np.float32(0.5).tobytes() if data[-4:] != np.float32(0.5).tobytes() else \
      np.float32(0.25).tobytes()  # the last weight's last value: the file stays valid
  weights.write_bytes(bytes(data))
  with pytest.raises(AssertionError, match="reached the compiled sampler"):
    run_eval(copy, cfg)


def test_records_store_paths_inside_the_repository_relative_to_it(tmp_path):
  inside = paths.MODELS / "default" / "sudoku"
  assert paths.relative(inside) == "experiments/models/default/sudoku"
  assert paths.relative(str(tmp_path)) == str(tmp_path.resolve())  # outside: absolute
  assert paths.relative("hf:openai/gsm8k:main") == "hf:openai/gsm8k:main"  # not a file
  assert paths.relative(None) is None


def test_force_re_runs_and_appends_a_recorded_setting(eval_run, model_dir, tmp_path):
  out = tmp_path / "res.jsonl"
  cfg = EvalConfig.build(**{**BASE, "steps": "2"}, out=str(out))
  run_eval(model_dir, cfg)
  run_eval(model_dir, dataclasses.replace(cfg, force=True))
  assert len(out.read_text().splitlines()) == 2
  assert len(evaluate.generations_path(out).read_text().splitlines()) == 14


def test_an_in_memory_model_is_labelled_by_model_name(text_sampler):
  cfg = EvalConfig.build(**{**BASE, "steps": "2", "limit": 2})
  assert run_eval(text_sampler, cfg)[0]["model"] == "<in-memory>"
  record = run_eval(text_sampler, cfg, model_name="mine")[0]
  assert record["model"] == "mine" and record["model_path"] is None and record["n"] == 2


def test_the_table_has_one_row_per_setting_and_the_task_extras_as_columns(eval_run):
  _, records, _, _ = eval_run
  lines = report.format_table(records).splitlines()
  groups = report.group_names(records)  # arith: addition / multiplication, those drawn
  assert groups and set(groups) <= {"addition", "multiplication"}
  assert lines[0].split() == ["task", "protocol", "search", "steps", "n", "accuracy",
                              *(w for g in groups for w in ("acc", g)),
                              "answered", "digit_accuracy", "format", "NFE/prompt",
                              "scorer", "NFE", "tok/s", "seconds", "commits"]
  assert [line.split()[3] for line in lines[1:]] == ["16", "4", "2"]
  assert all(line.split()[-1] == "thr=0.999,budget" for line in lines[1:])  # the default
  nfe = 9 + len(groups)  # NFE per prompt, after one accuracy cell per group
  assert [line.split()[nfe] for line in lines[1:]] == ["16", "4", "2"]
  assert all(line.split()[:2] == ["arith", "compact"] for line in lines[1:])


# --- protocols and their resolution ----------------------------------------------------


@pytest.mark.parametrize("protocol, task, want", [
    ("compact", "sudoku", dict(gen_length=24, block_length=24, steps=24, temperature=0.0)),
    ("compact", "countdown", dict(gen_length=48, block_length=48, steps=48)),
    ("compact", "arith", dict(gen_length=56, block_length=56, steps=56)),
    ("llada", "gsm8k", dict(gen_length=256, block_length=8, steps=256, temperature=0.0)),
    ("llada", "math500", dict(gen_length=512, block_length=64, steps=512)),
    ("d1", "gsm8k", dict(gen_length=256, block_length=32, steps=128, temperature=0.0)),
    ("mro", "gsm8k", dict(gen_length=256, block_length=8, steps=128, temperature=0.25)),
    ("mro", "math500", dict(gen_length=512, block_length=64, steps=256, temperature=0.25)),
    ("mro", "countdown", dict(gen_length=256, block_length=64, steps=128)),
])
def test_a_protocol_fills_in_its_per_task_sampler_defaults(protocol, task, want):
  (scfg,) = EvalConfig.build(task=task, protocol=protocol).sampler_configs()
  assert scfg.remasking == "low_confidence"
  for name, value in want.items():
    assert getattr(scfg, name) == value, name


def test_compact_lengths_fit_every_compact_target_plus_eos_and_halve_three_times(model_dir):
  tok = load_tokenizer(model_dir)
  for task in ("sudoku", "countdown", "arith"):
    p = get_protocol("compact", task)
    longest = max(len(tok.encode(ex.target))
                  for ex in get_task(task).examples("train", limit=300))
    assert longest + 1 <= p.gen_length, task
    assert p.gen_length % 8 == 0, task  # steps L, L/2, L/4, L/8 all divide


def test_d1_evaluates_256_items_of_countdown_and_sudoku_and_appends_reasoning():
  for task in ("countdown", "sudoku"):
    assert EvalConfig.build(task=task, protocol="d1").resolved_protocol().limit == 256
  assert EvalConfig.build(task="gsm8k", protocol="d1").resolved_protocol().limit is None
  assert get_protocol("d1").assistant_prefix == "<reasoning>"
  assert {get_protocol(n, "gsm8k").style for n in ("llada", "d1", "mro")} == {"protocol"}


def test_explicit_options_override_the_protocol_and_steps_follow_the_new_length():
  cfg = EvalConfig.build(task="gsm8k", protocol="d1", gen_length=512, temperature=0.5,
                   remasking="margin", limit=10)
  (scfg,) = cfg.sampler_configs()
  assert (scfg.gen_length, scfg.steps, scfg.block_length) == (512, 256, 32)
  assert (scfg.temperature, scfg.remasking) == (0.5, "margin")
  assert cfg.resolved_protocol().limit == 10
  cfg = EvalConfig.build(task="sudoku", steps="L,L/2,L/4,L/8,3", gen_length=40)
  assert [s.steps for s in cfg.sampler_configs()] == [40, 20, 10, 5, 3]
  assert {s.block_length for s in cfg.sampler_configs()} == {40}  # compact: one block


def test_unknown_protocol_lists_the_known_ones():
  with pytest.raises(ValueError, match="compact, llada, d1, mro, dream"):
    get_protocol("d2")
  assert protocol_names() == ("compact", "llada", "d1", "mro", "dream")


def test_an_invalid_protocol_field_raises_naming_it():
  with pytest.raises(ValueError, match="steps_fraction"):
    Protocol("x", steps_fraction=0.0)
  with pytest.raises(ValueError, match="style"):
    Protocol("x", style="chat")


def test_steps_tokens_are_fractions_of_the_response_length():
  assert [eval_settings.resolve_steps(s, 24) for s in ("L", "full", "L/2", "L/8", "7", 5)] == \
      [24, 24, 12, 3, 7, 5]
  for bad in ("L/5", "L/0", "M", "L/x", "2.5"):
    with pytest.raises(ValueError, match="steps"):
      eval_settings.resolve_steps(bad, 24)


def test_the_last_batch_is_padded_with_copies_of_a_real_row():
  got = [(idx.tolist(), n) for idx, n in evaluate.batches(7, 3)]
  assert got == [([0, 1, 2], 3), ([3, 4, 5], 3), ([6, 6, 6], 1)]


# --- prompts ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
  texts = ["What is 2 + 2?", "<reasoning>\n4\n</reasoning>\n<answer>\n\\boxed{4}\n</answer>"]
  return build_hf_tokenizer(tmp_path_factory.mktemp("hf_tok"), texts, 300,
                            chat_template=LLADA_CHAT_TEMPLATE)


def test_protocol_prompts_use_the_chat_template_and_d1_appends_reasoning(chat_tokenizer):
  ex = Example("q-0", "What is 2 + 2?", "", "4", {"style": "protocol"})
  (d1,) = evaluate.build_prompts([ex], chat_tokenizer, get_protocol("d1", "gsm8k"))
  assert d1 == ("<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 2?"
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<reasoning>")
  (llada,) = evaluate.build_prompts([ex], chat_tokenizer, get_protocol("llada", "gsm8k"))
  assert llada == d1.removesuffix("<reasoning>")
  (compact,) = evaluate.build_prompts([ex], chat_tokenizer, get_protocol("compact", "gsm8k"))
  assert compact == ex.prompt


def test_a_tokenizer_without_a_chat_template_gets_the_plain_prompt(model_dir):
  ex = Example("q-0", "What is 2 + 2?", "", "4", {"style": "protocol"})
  (text,) = evaluate.build_prompts([ex], load_tokenizer(model_dir), get_protocol("d1"))
  assert text == "What is 2 + 2?<reasoning>"


# --- the shipped-model resolver ----------------------------------------------------------


def test_default_resolves_to_the_shipped_model_of_the_task(tmp_path, monkeypatch):
  monkeypatch.setattr(loading, "MODELS_DIR", tmp_path)
  (tmp_path / "default" / "sudoku").mkdir(parents=True)
  (tmp_path / "default" / "sudoku" / "config.json").write_text("{}")
  assert loading.resolve_model("default", "sudoku") == tmp_path / "default" / "sudoku"
  with pytest.raises(ValueError, match="no shipped 'default' model for task 'arith'.*sudoku"):
    loading.resolve_model("default", "arith")
  with pytest.raises(ValueError, match="'default-mro' models: none yet"):
    loading.resolve_model("default-mro", "sudoku")
  with pytest.raises(ValueError, match="does not exist"):
    loading.resolve_model(tmp_path / "nowhere", "sudoku")


# --- bad input, refused before compiling ----------------------------------------------------


@pytest.mark.parametrize("fields, match", [
    (dict(task="chess"), "unknown task 'chess'.*sudoku"),
    (dict(task="arith", protocol="d2"), "unknown protocol 'd2'.*compact"),
    (dict(task="arith", limit=0), "limit must be a positive"),
    (dict(task="arith", batch_size=0), "batch_size"),
    (dict(task="sudoku", protocol="d1", steps="12"), "steps=12 is not divisible"),
    (dict(task="sudoku", steps="L/5"), "not divisible by 5"),
    (dict(task="sudoku", steps="48"), "exceeds gen_length=24"),
    (dict(task="sudoku", steps="4,L/6"), "same number of steps twice"),
    (dict(task="sudoku", steps="4,8", threshold=0.9), "at most one steps value"),
    (dict(task="sudoku", protocol="d1", gen_length=48), "not divisible by block_length=32"),
    (dict(task="arith", temperature=-1.0), "temperature"),
    (dict(task="arith", split="dev"), "split"),
])
def test_bad_config_raises_naming_the_problem(fields, match):
  with pytest.raises(ValueError, match=match):
    EvalConfig.build(**fields)


def test_a_missing_data_file_raises_before_compiling(model_dir, tmp_path, no_compile):
  missing = tmp_path / "missing.csv"
  with pytest.raises(ValueError, match="not found.*missing.csv"):
    run_eval(model_dir, EvalConfig.build(task="sudoku", data=str(missing)))


def test_a_malformed_data_row_is_reported_with_its_line_before_compiling(model_dir, tmp_path,
                                                                        no_compile):
  ((puzzle, solution),) = get_task("sudoku").generate("test", 1)
  data = tmp_path / "sudoku.csv"
  data.write_text(f"Puzzle,Solution\n{puzzle},{solution}\n{puzzle[:8]},{solution}\n")
  with pytest.raises(ValueError, match="line 3"):
    run_eval(model_dir, EvalConfig.build(task="sudoku", data=str(data)))


def test_a_prompt_too_long_for_the_model_raises_before_compiling(model_dir, no_compile):
  with pytest.raises(ValueError, match="max_seq_len=96"):
    run_eval(model_dir, EvalConfig.build(task="arith", limit=2, gen_length=128))


def test_an_empty_data_file_raises(model_dir, tmp_path, no_compile):
  data = tmp_path / "sudoku.csv"
  data.write_text("Puzzle,Solution\n")
  with pytest.raises(ValueError, match="no examples"):
    run_eval(model_dir, EvalConfig.build(task="sudoku", data=str(data)))


def test_search_reward_weights_reach_the_reward_config():
  cfg = EvalConfig.build(task="sudoku", steps="L/4", search="mro", rewards="tv=2,q=0.5")
  rewards = cfg.resolved_rewards()
  assert rewards.use == ("tv", "q")
  assert (rewards.w_tv, rewards.w_ppl, rewards.w_q) == (2.0, 1.0, 0.5)
  with pytest.raises(ValueError, match="not a number"):
    EvalConfig.build(task="sudoku", steps="L/4", search="mro", rewards="tv=two")


# --- accuracy per example group (Sudoku: unique / several solutions) -------------------


def test_group_accuracy_scores_each_group_of_examples_apart():
  task = get_task("sudoku")
  several, unique = "1200340021000000", "4100000113002000"
  examples = [task._example(f"x{i}", p, _a_solution(p), "compact")
              for i, p in enumerate([several, unique, unique, several, unique])]
  correct = [0.0, 1.0, 1.0, 1.0, 0.0]
  gens = [{"index": i, "score": {"correct": c}} for i, c in enumerate(correct)]
  groups = evaluate.group_accuracy(task, examples, gens)
  assert groups == {"several": {"n": 2, "accuracy": 0.5},
                    "unique": {"n": 3, "accuracy": pytest.approx(2 / 3)}}
  assert evaluate.group_accuracy(get_task("arith"), examples, gens) is None


def _a_solution(puzzle):
  from rewards.tasks.sudoku import solutions
  return solutions(puzzle)[0]


def test_a_sudoku_eval_records_and_prints_accuracy_for_unique_and_several(model_dir,
                                                                         tmp_path):
  from rewards.tasks.sudoku import read_csv, solutions
  data = loading.MODELS_DIR.parent / "data" / "sudoku_test_8blanks_any.csv"
  rows = read_csv(data)[:24]
  counts = [len(solutions(p)) for p, _ in rows]
  assert 1 in counts and max(counts) > 1
  out = tmp_path / "res.jsonl"
  cfg = EvalConfig.build(task="sudoku", data=str(data), limit=24, steps="4", batch_size=8,
                         temperature=1.0, out=str(out))
  (record,) = run_eval(model_dir, cfg)
  assert json.loads(out.read_text())["groups"] == record["groups"]
  several = sum(c > 1 for c in counts)
  assert {k: v["n"] for k, v in record["groups"].items()} == {"several": several,
                                                             "unique": 24 - several}
  gens = [json.loads(x) for x in evaluate.generations_path(out).read_text().splitlines()]
  for name, want in (("several", lambda c: c > 1), ("unique", lambda c: c == 1)):
    mine = [g["score"]["correct"] for g in gens if want(counts[g["index"]])]
    assert record["groups"][name]["accuracy"] == np.mean(mine)
  shown = {**record, "groups": {"several": {"n": 2, "accuracy": 0.25},
                                 "unique": {"n": 6, "accuracy": 0.75}}}
  head, row = (line.split() for line in report.format_table([shown]).splitlines())
  assert head[6:10] == ["acc", "several", "acc", "unique"] and row[6:8] == ["0.2500", "0.7500"]
  assert "| several % | unique % |" in report.markdown_table([shown])
  assert "| 25.0 | 75.0 |" in report.markdown_table([shown])


def test_an_arith_eval_reports_addition_and_multiplication_apart(eval_run):
  cfg, records, lines, gens = eval_run
  examples = get_task("arith").examples("test", limit=cfg.limit)
  op = {i: "addition" if e.meta["op"] == "+" else "multiplication"
        for i, e in enumerate(examples)}
  for record, line in zip(records, lines):
    assert line["groups"] == record["groups"]
    mine = [g for g in gens if g["setting_id"] == record["setting_id"]]
    assert sum(v["n"] for v in record["groups"].values()) == len(mine) == cfg.limit
    for name, got in record["groups"].items():
      scores = [g["score"]["correct"] for g in mine if op[g["index"]] == name]
      assert got == {"n": len(scores), "accuracy": pytest.approx(np.mean(scores))}


@pytest.mark.parametrize("sampler, search, want", [
    ({}, None, "fixed"),
    ({"threshold": 0.99}, None, "thr=0.99"),
    ({"threshold": 0.999, "fixed_steps": True}, {"method": "mro"}, "thr=0.999,budget"),
    ({"factor": 1.0, "fixed_steps": True}, None, "factor=1,budget"),
    ({"correct_below": 0.5}, None, "fixed+corr<0.5"),
    ({"threshold": 0.9}, {"method": "cascade"}, "stages"),
])
def test_the_table_names_how_each_setting_commits(sampler, search, want):
  record = {"sampler": {"threshold": None, "factor": None, "fixed_steps": False,
                        "correct_below": None, **sampler}, "search": search}
  assert report.commit_rule(record) == want


def test_a_task_without_groups_records_none(eval_run):
  _, records, _, _ = eval_run
  gens = [{"index": 0, "score": {"correct": 1.0}}]
  examples = get_task("countdown").examples("test", limit=1)
  assert evaluate.group_accuracy(get_task("countdown"), examples, gens) is None
  plain = [{k: v for k, v in r.items() if k != "groups"} for r in records]
  assert "acc" not in report.format_table(plain).splitlines()[0].split()


def test_the_search_options_for_several_answers_name_their_settings_apart():
  search = {"method": "best-of-n", "k": 4, "n_live": 1, "group_steps": 3,
            "temperature": 1.0, "select": "none"}
  rewards = {"spec": "tv", "use": ["tv"], "quality_source": "vote"}
  base = {"steps": 6, "rewards": rewards, "sampler": {}}
  rows = [{**base, "search": search},
          {**base, "search": {**search, "branch_steps": 1}},
          {**base, "search": {**search, "final_verify": "all"}},
          {**base, "search": {**search, "branch_steps": 2, "final_verify": 3}}]
  labels = [report.setting_label(r) for r in rows]
  assert len(set(labels)) == 4 and len(report.latest(rows)) == 4
  assert labels[3] == ("best-of-4 (tv, sampled in the first 2 steps then greedy, final tv "
                       "over the whole answer (3 rows))")
  assert "one row per position" in labels[2]
  assert [report.search_label(r) for r in rows] == [
      "best-of-4:tv", "best-of-4:tv:b1", "best-of-4:tv:fvall", "best-of-4:tv:b2:fv3"]
