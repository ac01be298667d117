"""Sweeps: grid expansion, one workdir per run, relaunch skips finished runs, summary."""

import json

import pytest
import yaml

from mro import sweep
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=2",
        "model.mlp_hidden=64", "data.train_size=64", "train.batch_size=8", "train.steps=2",
        "train.warmup_steps=1", "train.checkpoint_every=2", "train.log_every=1",
        "train.progress=false"]


def write(tmp_path, spec, name="s.yaml"):
  path = tmp_path / name
  path.write_text(yaml.safe_dump(spec))
  return path


def test_the_grid_expands_to_its_cartesian_product_plus_named_runs(tmp_path):
  spec = {"name": "g", "command": "train", "config": "tiny", "set": ["train.steps=3"],
          "grid": {"train.lr": [0.001, 0.01], "data.mask_eps": [0.001, 0.01]},
          "runs": [{"name": "paper", "set": ["train.grad_clip=2.0"]}]}
  runs = sweep.expand(sweep.load_sweep(write(tmp_path, spec)), tmp_path)
  assert len(runs) == 5 and len({r.workdir for r in runs}) == 5
  assert runs[-1].name == "paper" and runs[-1].sets == ("train.steps=3", "train.grad_clip=2.0")
  assert all(r.sets[0] == "train.steps=3" for r in runs)
  assert {frozenset(r.sets[1:]) for r in runs[:4]} == {frozenset(c) for c in [
      ("train.lr=0.001", "data.mask_eps=0.001"), ("train.lr=0.001", "data.mask_eps=0.01"),
      ("train.lr=0.01", "data.mask_eps=0.001"), ("train.lr=0.01", "data.mask_eps=0.01")]}


def test_a_python_sweep_file_defines_SWEEP(tmp_path):
  path = tmp_path / "s.py"
  path.write_text("SWEEP = {'name': 'p', 'command': 'train', 'config': 'tiny',\n"
                  "         'grid': {'train.lr': [0.1, 0.2]}}\n")
  assert [r.sets for r in sweep.expand(sweep.load_sweep(path), tmp_path)] == [
      ("train.lr=0.1",), ("train.lr=0.2",)]


@pytest.mark.parametrize("spec, match", [
    ({"command": "train", "config": "tiny"}, "needs a 'name'"),
    ({"name": "x", "command": "fly", "config": "tiny"}, "command"),
    ({"name": "x", "command": "train"}, "config"),
    ({"name": "x", "command": "eval"}, "eval.model"),
    ({"name": "x", "command": "train", "config": "tiny", "colour": 1}, "unknown sweep key"),
    ({"name": "x", "command": "train", "config": "tiny", "grid": {"lr": [1]}}, "section.key"),
])
def test_bad_sweep_files_are_refused(tmp_path, spec, match):
  with pytest.raises(ValueError, match=match):
    sweep.expand(sweep.load_sweep(write(tmp_path, spec)), tmp_path)


def test_a_relaunched_sweep_skips_finished_runs_and_summarises_from_workdirs(tmp_path, capsys):
  spec = {"name": "lr", "command": "train", "config": "tiny", "set": TINY,
          "grid": {"train.lr": [0.001, 0.003]}, "concurrency": 2}
  path = write(tmp_path, spec)
  rows = sweep.run_sweep(path, root=tmp_path)
  runs = sweep.expand(sweep.load_sweep(path), tmp_path)
  assert all(sweep.is_done(r) for r in runs)
  assert [r["run"] for r in rows] == [r.name for r in runs]
  assert all(r["steps"] == 2 and r["done"] for r in rows)
  mtimes = [(r.workdir / "metrics.jsonl").stat().st_mtime for r in runs]
  capsys.readouterr()
  sweep.run_sweep(path, root=tmp_path)  # relaunch
  assert "done, skipped" in capsys.readouterr().err
  assert [(r.workdir / "metrics.jsonl").stat().st_mtime for r in runs] == mtimes
  summary = [json.loads(x) for x in (tmp_path / "lr" / "summary.jsonl").read_text().splitlines()]
  assert len(summary) == 2 and (tmp_path / "lr" / "summary.md").read_text().startswith("| run")


def test_a_failing_run_is_reported_and_not_marked_done(tmp_path):
  spec = {"name": "bad", "command": "train", "config": "tiny",
          "set": TINY + ["train.no_such_key=1"]}
  with pytest.raises(RuntimeError, match="failed"):
    sweep.run_sweep(write(tmp_path, spec), root=tmp_path)
  assert not (tmp_path / "bad" / "base" / "done.json").exists()
  assert "no_such_key" in (tmp_path / "bad" / "base" / "sweep.log").read_text()


def test_runs_may_name_their_own_command_and_an_eval_only_run_its_model(tmp_path):
  spec = {"name": "t", "command": "rl", "config": "mro_sudoku", "set": ["train.steps=2"],
          "eval": {"task": "sudoku", "steps": "L,L/2", "model": "best"},
          "runs": [{"name": "base", "command": "eval", "model": "default"},
                   {"name": "rs", "command": "reject-sample", "set": ["search.k=2"]}]}
  base, rs = sweep.expand(sweep.load_sweep(write(tmp_path, spec)), tmp_path)
  (cmd,) = sweep.commands(base)
  assert cmd[:5] == ["eval", "--model", "default", "--out", str(base.workdir / "eval.jsonl")]
  assert dict(zip(cmd[5::2], cmd[6::2])) == {"--task": "sudoku", "--steps": "L,L/2"}
  train_cmd, eval_cmd = sweep.commands(rs)
  assert train_cmd[:3] == ["reject-sample", "--config", "mro_sudoku"]
  assert train_cmd[-4:] == ["--set", "train.steps=2", "--set", "search.k=2"]
  assert eval_cmd[:3] == ["eval", "--model", str(rs.workdir / "best")]
