"""Experiment configs: shipped files load, overrides are typed, bad values fail early."""

import dataclasses
import json

import pytest

from models.config import PRESETS
from mro import config
def load(*sets):
  return config.load_config("tiny", list(sets))


def test_the_shipped_tiny_config_loads_with_its_file_values():
  cfg = load()
  assert cfg.model == dataclasses.replace(PRESETS["tiny"])  # preset, no model overrides
  assert cfg.data.task == "arith" and cfg.data.max_prompt_len == 24
  assert cfg.train.steps == 300 and cfg.train.lr == 1e-3 and cfg.train.warmup_steps == 30
  assert cfg.sampler.gen_length == 64 and cfg.sampler.block_length == 64


def test_every_shipped_config_loads():
  names = sorted(p.stem for p in config.CONFIG_DIR.glob("*.yaml"))
  assert "tiny" in names
  for name in names:
    config.load_config(name)


@pytest.mark.parametrize("item, section, field, want", [
    ("train.steps=50", "train", "steps", 50),
    ("train.lr=1e-3", "train", "lr", 1e-3),  # YAML reads "1e-3" as a string
    ("train.lr=2", "train", "lr", 2.0),  # an int is a valid float
    ("train.lr=0.25", "train", "lr", 0.25),
    ("train.wandb=true", "train", "wandb", True),
    ("train.progress=false", "train", "progress", False),
    ("tokenizer.path=null", "tokenizer", "path", None),
    ("tokenizer.path=", "tokenizer", "path", None),
    ("tokenizer.path=/some/dir", "tokenizer", "path", "/some/dir"),
    ("sampler.threshold=0.9", "sampler", "threshold", 0.9),
    ("model.d_model=96", "model", "d_model", 96),
])
def test_set_overrides_are_parsed_to_the_field_type(item, section, field, want):
  value = getattr(getattr(load(item), section), field)
  assert value == want and type(value) is type(want)


def test_a_model_override_applies_on_top_of_the_preset():
  cfg = load("model.preset=small", "model.n_layers=1")
  assert cfg.model == dataclasses.replace(PRESETS["small"], n_layers=1)


@pytest.mark.parametrize("item, names", [
    ("foo.bar=1", ["'foo'"]),  # unknown section
    ("train.stepz=3", ["train.stepz", "steps"]),  # unknown key, known keys listed
    ("train.steps=abc", ["train.steps", "'abc'"]),
    ("train.steps=1.5", ["train.steps", "1.5"]),
    ("train.log_every=true", ["train.log_every", "True"]),  # a bool is not an int
    ("train.lr=fast", ["train.lr", "'fast'"]),
    ("data.path=5", ["data.path", "5"]),
    ("model.preset=huge", ["'huge'", "tiny"]),
    ("sampler.gen_length=48", ["gen_length=48", "block_length=64"]),
    ("sampler.steps=0", ["steps", "0"]),
    ("sampler.temperature=-1", ["temperature", "-1"]),
    ("data.max_response_len=300", ["data.max_prompt_len + data.max_response_len", "324",
                                   "model.max_seq_len=256"]),
    ("train.grad_accum=3", ["train.batch_size=32", "train.grad_accum=3"]),
    ("train.steps=0", ["train.steps", "0"]),
    ("data.objective=rl", ["data.objective", "'rl'"]),
    ("data.mask_eps=0", ["data.mask_eps", "0"]),
    ("model.d_model=30", ["model.d_model=30", "model.n_heads=4"]),
    ("mesh.data=0", ["mesh.data", "0"]),
    ("train", ["section.key=value", "'train'"]),
])
def test_each_invalid_option_is_a_value_error_naming_it(item, names):
  with pytest.raises(ValueError) as err:
    load(item)
  for name in names:
    assert name in str(err.value), (name, str(err.value))


def test_sampler_steps_must_divide_between_blocks():
  with pytest.raises(ValueError, match=r"steps=6 .*number of blocks.*4"):
    load("sampler.gen_length=64", "sampler.block_length=16", "sampler.steps=6")


@pytest.mark.parametrize("item", ["train.lr=nan", "train.lr=inf", "train.grad_clip=nan",
                                  "sampler.temperature=nan"])
def test_a_non_finite_float_is_refused(item):
  with pytest.raises(ValueError, match=item.split("=")[0]):
    load(item)


@pytest.mark.parametrize("item", ["train.b1=1.5", "train.b2=-0.1", "train.weight_decay=-1"])
def test_out_of_range_optimizer_settings_are_refused(item):
  with pytest.raises(ValueError, match=item.split("=")[0]):
    load(item)


def test_an_unknown_config_name_lists_the_shipped_ones():
  with pytest.raises(ValueError, match=r"'nope'.*tiny"):
    config.load_config("nope")


def test_a_missing_yaml_path_is_a_value_error(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    config.load_config(str(tmp_path / "missing.yaml"))


def test_invalid_yaml_is_a_value_error_naming_the_file(tmp_path):
  path = tmp_path / "bad.yaml"
  path.write_text("train: {steps: [\n")
  with pytest.raises(ValueError, match="bad.yaml"):
    config.load_config(str(path))


@pytest.mark.parametrize("text, name", [
    ("train: 5\n", "train"),  # a section that is not a mapping
    ("- train\n- data\n", "mapping"),  # a file that is not a mapping of sections
    ("model: {preset: [tiny]}\n", "preset"),
])
def test_a_malformed_config_file_is_a_value_error_not_a_crash(tmp_path, text, name):
  path = tmp_path / "malformed.yaml"
  path.write_text(text)
  with pytest.raises(ValueError, match=name):
    config.load_config(str(path))


def test_a_yaml_file_loads_and_sets_apply_on_top(tmp_path):
  path = tmp_path / "mine.yaml"
  path.write_text("model: {preset: tiny, n_layers: 2}\ntrain: {steps: 50, warmup_steps: 5}\n")
  cfg = config.load_config(str(path), ["train.steps=60"])
  assert cfg.model.n_layers == 2 and cfg.train.steps == 60 and cfg.train.warmup_steps == 5


def test_the_resolved_config_saves_and_loads_back_equal(tmp_path):
  cfg = load("model.d_model=64", "train.lr=1e-3", "sampler.threshold=0.5", "data.path=x.jsonl",
             "mesh.fsdp=2", "tokenizer.byte_fallback=true", "rl.baseline=group_mean")
  path = tmp_path / "config.json"
  config.save_resolved(cfg, path)
  back = config.load_resolved(path)
  assert back == cfg
  saved = json.loads(path.read_text())
  assert "preset" not in saved["model"]  # every field resolved, no preset
  assert set(saved) == {"model", "tokenizer", "data", "train", "sampler", "mesh", "start",
                        "search", "rewards", "reject", "rl", "diffu_grpo", "coupled_grpo",
                        "wd1", "validation"}


# --- hostile YAML: alias bombs and huge values --------------------------------------------

LAUGHS = "[" + ", ".join(["x"] * 9) + "]"


def alias_bomb(levels: int) -> str:
  """A flow-style 'billion laughs' of `levels` levels (9**levels items expanded)."""
  rows = [f"&l0 {LAUGHS}"]
  rows += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
  return "[" + ", ".join(rows) + "]"


def assert_refused_briefly(excinfo, *names):
  message = str(excinfo.value)
  assert len(message) < 800, message[:200]
  for name in names:
    assert name in message, message


@pytest.mark.parametrize("levels", [4, 9])
def test_a_config_file_with_yaml_aliases_is_refused_naming_the_file(tmp_path, levels):
  path = tmp_path / "bomb.yaml"
  path.write_text(f"train:\n  steps: {alias_bomb(levels)}\n")
  with pytest.raises(ValueError) as excinfo:
    config.load_config(str(path))
  assert_refused_briefly(excinfo, str(path), "aliases", "line 2")


@pytest.mark.parametrize("levels", [4, 9])
def test_a_set_value_with_yaml_aliases_is_refused_naming_the_option(levels):
  with pytest.raises(ValueError) as excinfo:
    config.load_config("tiny", [f"train.steps={alias_bomb(levels)}"])
  assert_refused_briefly(excinfo, "--set 'train.steps=", "aliases")


def test_a_sweep_file_and_its_set_values_refuse_yaml_aliases(tmp_path):
  from mro.sweeps.spec import Run, load_sweep, validate_configs

  path = tmp_path / "s.yaml"
  path.write_text("runs: &r [{name: a}]\nmore: *r\n")
  with pytest.raises(ValueError) as excinfo:
    load_sweep(path)
  assert_refused_briefly(excinfo, str(path), "aliases")
  run = Run(name="a", command="train", config="tiny",
            sets=(f"train.steps={alias_bomb(9)}",), eval=None, workdir=tmp_path / "a")
  with pytest.raises(ValueError) as excinfo:
    validate_configs([run])
  assert_refused_briefly(excinfo, "run 'a'", "aliases")


@pytest.mark.parametrize("item, names", [
    ("train.steps=" + "9" * 100 + "x" * 100_000, ["train.steps must be int", "characters)"]),
    ("train.lr=[" + ", ".join(["1"] * 50_000) + "]", ["train.lr must be float"]),
    ("train.steps=!!python/object/apply:os.system [echo hi]", ["--set", "are not allowed"]),
    ("train.steps=[1, ", ["--set 'train.steps=[1, '", "not valid YAML"]),
])
def test_a_bad_set_value_gets_a_bounded_message_naming_the_field(item, names):
  with pytest.raises(ValueError) as excinfo:
    config.load_config("tiny", [item])
  assert_refused_briefly(excinfo, *names)


@pytest.mark.parametrize("item, why", [
    ("train.steps=!!python/object/apply:os.system [echo hi]",
     "YAML tags such as !!python/object/apply:os.system are not allowed"),
    ("train.steps=[!!python/name:os.system x]", "YAML tags such as !!python/name:os.system"),
    ("train.steps=[1, ", "not valid YAML: expected the node content"),
    ("train.lr={a: 1", "not valid YAML: expected ',' or '}'"),
])
def test_a_set_value_that_is_not_plain_yaml_is_one_line_naming_key_value_and_why(item, why):
  with pytest.raises(ValueError) as excinfo:
    config.load_config("tiny", [item])
  message = str(excinfo.value)
  assert message.startswith(f"--set {item!r}: {why}"), message
  assert "\n" not in message and "<unicode string>" not in message  # no yaml excerpt
  assert "(line 1, column " in message


def test_a_sweep_set_value_with_a_python_tag_is_one_line_naming_the_run(tmp_path, capsys):
  from mro import cli

  path = tmp_path / "s.yaml"
  path.write_text('name: s\ncommand: train\nconfig: tiny\n'
                  'set: ["train.steps=!!python/name:os.system"]\n')
  code = cli.main(["sweep", str(path), "--root", str(tmp_path / "runs"), "--dry-run"])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1, err
  assert "run 'base': --set 'train.steps=!!python/name:os.system': YAML tags" in err
