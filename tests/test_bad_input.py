"""Every kind of bad input a user met gets a clear error naming the problem, or a bound:
hostile data rows and answers cost little, nonsense options are refused at config time,
damaged checkpoints are skipped by name, a NaN stop is one error line."""

import json
import shutil
import struct
import threading
import time
from pathlib import Path

import pytest

from models.hf_config import load_hf_config
from mro import cli
from mro.plan import PlanConfig
from mro.sampling.schedule import SamplerConfig
from models.sharding import MeshConfig
from rewards.tasks import get_task
from rewards.tasks.numeric import numeric_answer


def test_a_countdown_row_with_too_many_numbers_is_refused_by_name_at_once(tmp_path):
  data = tmp_path / "cd.jsonl"
  data.write_text('{"input": "1,2,3", "output": "6"}\n'
                  '{"input": "1,2,3,4,5,6,7,8,9,10,11,12", "output": "50"}\n')
  start = time.perf_counter()
  with pytest.raises(ValueError, match=r"cd.jsonl line 2.*12"):
    get_task("countdown").examples("test", path=str(data))
  assert time.perf_counter() - start < 5.0  # the exhaustive solver was never called on it
  from rewards.tasks.countdown import solve
  with pytest.raises(ValueError, match="at most|1 to 5"):
    solve(list(range(1, 8)), 10)


@pytest.mark.parametrize("row, field, digits", [
    ({"input": "3," + "7" * 5000, "output": "10"}, "input", 5000),  # past Python's int limit
    ({"input": ",".join(["9" * 4000] * 5), "output": "10"}, "input", 4000),  # 27 s of solve
    ({"input": "1,2,3", "output": "-" + "1" * 5000}, "output", 5000),
])
def test_countdown_numbers_of_thousands_of_digits_are_refused_by_file_and_line_at_once(
    tmp_path, row, field, digits):
  data = tmp_path / "cd.jsonl"
  data.write_text('{"input": "1,2,3", "output": "6"}\n' + json.dumps(row) + "\n")
  start = time.perf_counter()
  with pytest.raises(ValueError) as excinfo:
    get_task("countdown").examples("test", path=str(data))
  assert time.perf_counter() - start < 2.0  # refused on the text: nothing parsed or solved
  assert str(excinfo.value) == (f"{data} line 2: '{field}' has a number of {digits} digits; "
                                "a Countdown number has at most 18")


def test_number_extraction_is_bounded_on_hostile_responses():
  start = time.perf_counter()
  numeric_answer("1" + ",000" * 8000 + "1")  # quadratic in the number pattern alone
  numeric_answer("1,000 " * 200_000 + "<answer>7</answer>")  # 1.2 MB
  assert numeric_answer("x " * 500_000 + "so the answer is 1,234") == "1234"
  assert time.perf_counter() - start < 3.0  # took 3-9 s, and > 250 s for 1 MB, before


def test_math500_scoring_is_bounded_on_a_worker_thread():
  from rewards.tasks import math500
  task = get_task("math500")
  example = task.examples("test", limit=1)[0]
  results = {}

  def score_all():
    for junk in ("(10!)!", "\\frac{" * 25 + "1" + "}{2}" * 25, example.answer):
      start = time.perf_counter()
      results[junk] = (task.score(example, f"\\boxed{{{junk}}}")["correct"],
                       time.perf_counter() - start)

  worker = threading.Thread(target=score_all)
  worker.start()
  worker.join(timeout=3 * math500.DEADLINE_SECONDS + 60)
  assert not worker.is_alive(), "scoring from a thread never finished"
  assert results[example.answer][0] == 1.0  # the judge still works afterwards
  for junk, (correct, seconds) in results.items():
    if junk != example.answer:
      assert correct == 0.0 and seconds < math500.DEADLINE_SECONDS + 30, (junk, seconds)


def test_a_mesh_beyond_a_sane_device_count_is_refused_before_any_work():
  with pytest.raises(ValueError, match="100000 devices.*max_devices"):
    PlanConfig(preset="tiny", mesh=MeshConfig(data=100_000), batch=100_000)
  assert PlanConfig(preset="llada_8b", mesh=MeshConfig(data=8, fsdp=4)).batch == 32  # follows it


@pytest.mark.parametrize("field,value", [("temperature", float("nan")),
                                         ("temperature", float("inf")),
                                         ("cfg_scale", float("nan")), ("threshold", float("nan"))])
def test_nan_and_inf_sampler_options_are_refused_naming_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    SamplerConfig(**{field: value})


def test_mro_sample_with_a_nan_temperature_exits_2_naming_it(capsys):
  code = cli.main(["sample", "--model", "default", "--task", "sudoku", "--prompt",
                   "Sudoku 4010134234010134", "--temperature", "nan"])
  assert code == 2 and "temperature" in capsys.readouterr().err


@pytest.mark.parametrize("field,value,match", [("rope_theta", -5, "rope_theta"),
                                               ("n_layers", "six", "n_layers"),
                                               ("rms_norm_eps", 0, "norm_eps"),
                                               ("mask_token_id", 10**9, "mask_token_id")])
def test_a_model_config_json_with_a_bad_field_is_refused_naming_file_and_field(
    fixture_dir, tmp_path, field, value, match):
  hf = json.loads((fixture_dir / "config.json").read_text())
  hf[field] = value
  (tmp_path / "config.json").write_text(json.dumps(hf))
  with pytest.raises(ValueError, match=f"config.json.*{match}"):
    load_hf_config(tmp_path)


def write_safetensors(path: Path, header: bytes) -> None:
  path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))


@pytest.mark.parametrize("header, why", [
    (b"[1, 2, 3]", "header must be a JSON object.*got a JSON array"),
    (b'"weights"', "got a JSON string"),
    (b'{"w": [1]}', "tensor 'w'.*entry must be a JSON object, got a JSON array"),
    (b'{"w": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}}', "'w'.*shape must be"),
    (b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": null}}', "'w'.*data_offsets"),
    (b'{"w": {"dtype": 7, "shape": [4], "data_offsets": [0, 16]}}', "'w' has dtype 7"),
])
def test_a_safetensors_header_that_is_not_the_format_is_named_with_the_file(
    tmp_path, header, why):
  from models.safetensors_io import read_header

  path = tmp_path / "model.safetensors"
  write_safetensors(path, header)
  with pytest.raises(ValueError, match=f"model.safetensors: .*{why}"):
    read_header(path)


def shipped_model_copy(tmp_path) -> Path:
  model = tmp_path / "model"
  shutil.copytree(Path(__file__).resolve().parents[1] / "experiments/models/default/arith",
                  model)
  return model


def test_mro_sample_on_weights_with_an_array_header_exits_2_naming_the_file(tmp_path, capsys):
  model = shipped_model_copy(tmp_path)
  write_safetensors(model / "model.safetensors", b"[1, 2, 3]")
  code = cli.main(["sample", "--model", str(model), "--prompt", "1+2="])
  err = capsys.readouterr().err
  assert code == 2 and f"{model / 'model.safetensors'}: the safetensors header" in err, err


@pytest.mark.parametrize("name, what", [("tokenizer.model", "sentencepiece model"),
                                        ("tokenizer.json", "Hugging Face tokenizer")])
def test_a_garbage_tokenizer_file_is_refused_naming_its_path(tmp_path, name, what):
  from models.tokenizers import load_tokenizer

  (tmp_path / name).write_bytes(bytes(range(256)) * 2)
  with pytest.raises(ValueError, match=f"{tmp_path / name} is not a {what}"):
    load_tokenizer(tmp_path)


def test_mro_sample_with_a_garbage_tokenizer_model_exits_2_naming_it(tmp_path, capsys):
  model = shipped_model_copy(tmp_path)
  (model / "tokenizer.model").write_bytes(b"\x00garbage" * 30)
  code = cli.main(["sample", "--model", str(model), "--prompt", "1+2="])
  err = capsys.readouterr().err
  assert code == 2 and f"{model / 'tokenizer.model'} is not a sentencepiece model" in err, err


def test_a_non_utf8_data_file_is_refused_naming_the_file(tmp_path):
  bad = tmp_path / "cd.jsonl"
  bad.write_bytes(b'{"input": "1,2,3", "output": "6"}\n{"input": "\xff\xfe"}\n')
  with pytest.raises(ValueError, match=r"cd.jsonl is not UTF-8.*line 2"):
    get_task("countdown").examples("test", path=str(bad))
  csv = tmp_path / "s.csv"
  csv.write_bytes(b"Puzzle,Solution\n\xe9\n")
  with pytest.raises(ValueError, match="s.csv is not UTF-8"):
    get_task("sudoku").examples("test", path=str(csv))
  gsm = tmp_path / "g.jsonl"
  gsm.write_bytes(b'{"question": "\xff", "answer": "#### 1"}\n')
  with pytest.raises(ValueError, match="g.jsonl is not UTF-8"):
    get_task("gsm8k").examples("test", path=str(gsm))


def test_a_hub_dataset_offline_is_a_clear_error(monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  with pytest.raises(ValueError, match="network"):
    get_task("gsm8k").examples("test", path="hf:openai/gsm8k:main", limit=2)


# --- training: damaged checkpoints, NaN stop -----------------------------------------------


def _train(tmp_path, tiny_train_sets, *extra):
  argv = ["train", "--config", "tiny", "--workdir", str(tmp_path / "wd")]
  for item in [*tiny_train_sets, *extra]:
    argv += ["--set", item]
  return cli.main(argv)


def _damage(step_dir: Path, how: str) -> None:
  if how == "truncated array":
    files = [f for f in step_dir.rglob("*") if f.is_file() and f.stat().st_size > 1000]
    biggest = max(files, key=lambda f: f.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])
  else:  # emptied metadata
    for f in step_dir.rglob("*"):
      if f.is_file() and f.name in ("_METADATA", "metadata"):
        f.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated array", "emptied metadata"])
def test_resume_skips_a_damaged_latest_checkpoint_naming_it(tmp_path, tiny_train_sets, how,
                                                            capsys):
  assert _train(tmp_path, tiny_train_sets, "train.steps=7") == 0  # checkpoints 3, 6, 7
  ckpts = tmp_path / "wd" / "checkpoints"
  _damage(ckpts / "7", how)
  (tmp_path / "wd" / "model").rename(tmp_path / "old_model")
  capsys.readouterr()
  assert _train(tmp_path, tiny_train_sets, "train.steps=7") == 0
  err = capsys.readouterr().err
  assert "checkpoints/7 is damaged and was skipped" in err
  # found by the recorded file sizes, before Orbax read anything
  assert ("has 100 bytes" if how == "truncated array" else "metadata has 0 bytes") in err
  steps = [json.loads(x)["step"] for x in (tmp_path / "wd" / "metrics.jsonl").read_text()
           .splitlines()]
  assert steps == list(range(1, 8))  # step 7 redone from checkpoint 6, once


def test_a_checkpoint_file_whose_size_changed_is_named_before_orbax_reads_it(tmp_path,
                                                                            capsys):
  """An Orbax restore that fails midway leaves its other reads in flight, and their
  completions then print "Event loop is closed" tracebacks (unraisable exceptions); the
  file sizes recorded at save time find the truncated file before any read starts."""
  import jax.numpy as jnp
  import numpy as np
  from mro.training.checkpointing import Checkpointer
  rng = np.random.default_rng(0)  # incompressible: the largest file holds the arrays
  state = {f"w{i}": jnp.asarray(rng.standard_normal(4096), jnp.float32) for i in range(8)}
  with Checkpointer(tmp_path, keep=3) as ckpt:
    for step in (1, 2):
      ckpt.save(step, state, {"data_position": step})
  victim = max((f for f in (tmp_path / "2").rglob("*") if f.is_file()),
               key=lambda f: f.stat().st_size)
  size = victim.stat().st_size
  assert "/d/" in str(victim)  # an array data file
  victim.write_bytes(victim.read_bytes()[:100])
  with Checkpointer(tmp_path, keep=3) as ckpt:
    step, restored, meta = ckpt.restore_latest_intact(state)
  assert step == 1 and meta["data_position"] == 1
  np.testing.assert_array_equal(restored["w5"], state["w5"])
  name = victim.relative_to(tmp_path / "2")
  assert f"(ValueError: {name} has 100 bytes, {size} when saved)" in capsys.readouterr().err


def test_no_intact_checkpoint_is_a_named_error(tmp_path, tiny_train_sets, capsys):
  assert _train(tmp_path, tiny_train_sets, "train.steps=3") == 0
  _damage(tmp_path / "wd" / "checkpoints" / "3", "truncated array")
  capsys.readouterr()
  assert _train(tmp_path, tiny_train_sets, "train.steps=3") == 2
  err = capsys.readouterr().err
  assert "no intact checkpoint" in err and "step 3" in err and "Traceback" not in err
  assert (tmp_path / "wd" / "checkpoints" / "3.damaged").is_dir()  # kept, set aside
  assert _train(tmp_path, tiny_train_sets, "train.steps=3") == 0
  err = capsys.readouterr().err
  assert "only 1 set aside as damaged (3.damaged); training starts over from step 1" in err


def _saved_steps(directory, shape=(4, 3)):
  import jax.numpy as jnp
  import numpy as np
  from mro.training.checkpointing import Checkpointer
  rng = np.random.default_rng(0)
  state = {"w": jnp.asarray(rng.standard_normal(shape), jnp.float32)}
  with Checkpointer(directory, keep=3) as ckpt:
    for step in (1, 2):
      ckpt.save(step, state, {"data_position": step})
  return state


@pytest.mark.parametrize("set_aside", [False, True])
def test_a_checkpoint_of_other_shapes_is_never_moved_and_is_named(tmp_path, set_aside):
  import jax.numpy as jnp
  from mro.training.checkpointing import Checkpointer
  _saved_steps(tmp_path)
  before = sorted(p.name for p in tmp_path.iterdir())
  with Checkpointer(tmp_path, keep=3) as ckpt, pytest.raises(ValueError) as excinfo:
    ckpt.restore_latest_intact({"w": jnp.zeros((5, 3))}, set_aside=set_aside)
  message = str(excinfo.value)
  assert f"checkpoint {tmp_path / '2'} does not restore" in message
  assert "left in place" in message and "config.json" in message and len(message) < 800
  assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing renamed


def test_a_read_only_restore_skips_a_truncated_checkpoint_and_leaves_it_in_place(
    tmp_path, capsys):
  from mro.training.checkpointing import Checkpointer
  state = _saved_steps(tmp_path)
  victim = max((f for f in (tmp_path / "2").rglob("*") if f.is_file()),
               key=lambda f: f.stat().st_size)
  victim.write_bytes(victim.read_bytes()[:10])
  with Checkpointer(tmp_path, keep=3) as ckpt:
    assert ckpt.restore_latest_intact(state)[0] == 1  # read-only: the default
  assert (tmp_path / "2").is_dir() and not list(tmp_path.glob("*.damaged*"))
  assert "is damaged and was skipped" in capsys.readouterr().err
  with Checkpointer(tmp_path, keep=3) as ckpt:
    assert ckpt.restore_latest_intact(state, set_aside=True)[0] == 1  # training
  assert (tmp_path / "2.damaged").is_dir() and not (tmp_path / "2").exists()
  assert "moved to 2.damaged" in capsys.readouterr().err


def test_a_nan_stop_is_one_error_line_naming_the_step_and_the_last_good_checkpoint(
    tmp_path, tiny_train_sets, capsys):
  code = _train(tmp_path, tiny_train_sets, "train.lr=1e30", "train.grad_clip=1e30")
  err = capsys.readouterr().err
  assert code == 2 and "Traceback" not in err
  (line,) = [x for x in err.splitlines() if x.startswith("mro train: error:")]
  assert "step" in line and "checkpoint" in line
  assert not (tmp_path / "wd" / "run.lock").exists()  # released as the error left the run
