"""Sweeps: a typed spec, grid expansion, one workdir per run, relaunch skips finished runs,
bad input refused before anything runs, one line per run, a summary even when runs fail.
(The Ray backend: test_sweep_ray.py.)"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import yaml

from mro import cli, sweeps
from mro.evaluation.settings import option_names
from mro.sweeps import RayOptions, RunSpec, SweepSpec

pytestmark = pytest.mark.integration  # whole workflows: sweeps of training runs

TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=2",
        "model.mlp_hidden=64", "data.train_size=64", "train.batch_size=8", "train.steps=2",
        "train.warmup_steps=1", "train.checkpoint_every=2", "train.log_every=1",
        "train.progress=false"]

# A script run's program: writes an eval.jsonl row with the accuracy given, or exits 3.
SCRIPT = """import json, pathlib, sys
workdir, accuracy = pathlib.Path(sys.argv[2]), sys.argv[3]
if accuracy == "fail":
  print("boom: this run fails"); sys.exit(3)
row = {"task": "arith", "steps": 64, "n": 8, "accuracy": float(accuracy)}
(workdir / "eval.jsonl").write_text(json.dumps(row) + "\\n")
"""


def write(tmp_path, spec, name="s.yaml"):
  path = tmp_path / name
  path.write_text(yaml.safe_dump(spec))
  return path


def runs_of(tmp_path, spec):
  return sweeps.expand(sweeps.with_overrides(sweeps.load_sweep(write(tmp_path, spec)),
                                             root=tmp_path))


def script_sweep(tmp_path, accuracies, name="s"):
  script = tmp_path / "prog.py"
  script.write_text(SCRIPT)
  return {"name": name, "command": "script", "script": str(script),
          "runs": [{"name": f"r{i}", "args": [str(a)]} for i, a in enumerate(accuracies)]}


def test_the_grid_expands_to_its_cartesian_product_plus_named_runs(tmp_path):
  spec = {"name": "g", "command": "train", "config": "tiny", "set": ["train.steps=3"],
          "grid": {"train.lr": [0.001, 0.01], "data.mask_eps": [0.001, 0.01]},
          "runs": [{"name": "paper", "set": ["train.grad_clip=2.0"]}]}
  runs = runs_of(tmp_path, spec)
  assert len(runs) == 5 and len({r.workdir for r in runs}) == 5
  assert runs[-1].name == "paper" and runs[-1].sets == ("train.steps=3", "train.grad_clip=2.0")
  assert all(r.sets[0] == "train.steps=3" for r in runs)
  assert {frozenset(r.sets[1:]) for r in runs[:4]} == {frozenset(c) for c in [
      ("train.lr=0.001", "data.mask_eps=0.001"), ("train.lr=0.001", "data.mask_eps=0.01"),
      ("train.lr=0.01", "data.mask_eps=0.001"), ("train.lr=0.01", "data.mask_eps=0.01")]}
  assert all(r.workdir.parent == tmp_path / "g" for r in runs)


def test_a_python_sweep_file_defines_SWEEP(tmp_path):
  path = tmp_path / "s.py"
  path.write_text("SWEEP = {'name': 'p', 'command': 'train', 'config': 'tiny',\n"
                  "         'grid': {'train.lr': [0.1, 0.2]}}\n")
  assert [r.sets for r in sweeps.expand(sweeps.load_sweep(path))] == [
      ("train.lr=0.1",), ("train.lr=0.2",)]


def test_the_spec_is_frozen_with_every_key_declared_and_defaulted():
  spec = SweepSpec(name="s", command="train", config="tiny")
  assert (spec.root, spec.concurrency, spec.backend, spec.set, spec.runs) == (
      "runs/sweeps", 1, "local", (), ())
  assert spec.ray == RayOptions() and spec.ray.resources == {"CPU": 1}
  assert (spec.hosts, spec.ray.address, spec.ray.max_retries) == (1, None, 3)
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.name = "t"
  built = SweepSpec.from_mapping({"name": "s", "command": "train", "config": "tiny",
                                  "runs": [{"name": "a", "hosts": 1}],
                                  "ray": {"max_retries": 1}})
  assert built.runs == (RunSpec(name="a", hosts=1),) and built.ray.max_retries == 1


@pytest.mark.parametrize("spec, match", [
    ({"command": "train", "config": "tiny"}, "needs a 'name'"),
    ({"name": "x", "command": "fly", "config": "tiny"}, "command"),
    ({"name": "x", "command": "train"}, "config"),
    ({"name": "x", "command": "eval"}, "model"),
    ({"name": "x", "command": "train", "config": "tiny", "colour": 1},
     r"unknown sweep key\(s\) \['colour'\]"),
    ({"name": "x", "command": "train", "config": "tiny", "runs": [{"name": "a", "lr": 1}]},
     r"unknown key\(s\) \['lr'\] in runs\[0\]"),
    ({"name": "x", "command": "train", "config": "tiny", "ray": {"gpus": 1}},
     r"unknown key\(s\) \['gpus'\] in ray"),
    ({"name": "x", "command": "train", "config": "tiny", "eval": {"task": "arith", "stps": 2}},
     r"unknown key\(s\) \['stps'\] in eval"),
    ({"name": "x", "command": "train", "config": "tiny", "grid": {"lr": [1]}}, "section.key"),
    ({"name": "x", "command": "train", "config": "tiny", "concurrency": 0}, "concurrency"),
    ({"name": "x", "command": "train", "config": "tiny", "backend": "slurm"}, "backend"),
    ({"name": "x", "command": "train", "config": "tiny", "backend": "ray",
      "root": "runs/sweeps"}, "absolute path on storage every node sees"),
    ({"name": "x", "command": "train", "config": "tiny", "ray": {"hosts": 2}},
     "ray.hosts is now the sweep's own key hosts:"),
    ({"name": "x", "command": "train", "config": "tiny", "hosts": 0}, "sweep hosts"),
    ({"name": "x", "command": "script"}, "script:"),
    ({"name": "x", "command": "train", "config": "tiny",
      "ray": {"resources": {"GPU": -1}}}, r"ray.resources.GPU must be a number >= 0"),
])
def test_bad_sweep_files_are_refused(tmp_path, spec, match):
  with pytest.raises(ValueError, match=match):
    runs_of(tmp_path, spec)


def test_a_sweeps_eval_keys_are_the_options_of_mro_eval():
  """The sweep checks `eval:` against EvalConfig's options (not the CLI parser); the two
  name the same keys, less those the CLI or the sweep owns (--plot, --out, and joining
  the other processes of a multi-host run, which the sweep's environment says)."""
  verbs = next(a for a in cli.build_parser()._actions if a.dest == "verb")
  flags = {a.dest for a in verbs.choices["eval"]._actions} - {
      "help", "plot", "out", "coordinator", "num_processes", "process_id"}
  assert flags == set(option_names()) - {"out"}


@pytest.mark.parametrize("where", ["sweep", "run"])
@pytest.mark.parametrize("name", ["..", "../escaped", "a/b", "/tmp/abs"])
def test_a_name_that_would_leave_the_root_is_refused(tmp_path, where, name):
  spec = {"name": "s", "command": "train", "config": "tiny", "set": TINY}
  if where == "sweep":
    spec["name"] = name
  else:
    spec["runs"] = [{"name": name}]
  with pytest.raises(ValueError, match="one plain directory name"):
    sweeps.run_sweep(write(tmp_path, spec), root=tmp_path / "root")
  assert not (tmp_path / "escaped").exists() and not (tmp_path / "root").exists()


@pytest.mark.parametrize("bad, match", [
    ("train.no_such_key=1", r"unknown config key\(s\) \['train.no_such_key'\]"),
    ("nosection.steps=1", r"unknown config section\(s\) \['nosection'\]"),
    ("train.steps=many", "train.steps must be"),
])
def test_bad_set_keys_are_found_before_any_run_starts(tmp_path, bad, match):
  spec = {"name": "bad", "command": "train", "config": "tiny", "set": TINY,
          "grid": {"train.lr": [0.001, 0.002]}, "runs": [{"name": "odd", "set": [bad]}]}
  with pytest.raises(ValueError, match="run 'odd': " + match):
    sweeps.run_sweep(write(tmp_path, spec), root=tmp_path)
  assert not (tmp_path / "bad").exists()  # no run started


def test_mro_sweep_refuses_a_config_its_command_would_refuse_before_any_run_starts(
    tmp_path, capsys):
  """The checks across sections run in the sweep's check: an RL run whose batch is not
  whole rollouts (train.batch_size != prompts_per_batch x rollouts_per_prompt) stops the
  sweep before its first run, not mid-sweep."""
  spec = {"name": "rl", "command": "rl", "config": "rl_sudoku",
          "runs": [{"name": "fine"}, {"name": "odd", "set": ["train.batch_size=24"]}]}
  code = cli.main(["sweep", str(write(tmp_path, spec)), "--root", str(tmp_path / "root")])
  err = capsys.readouterr().err
  assert code == 2 and "run 'odd': train.batch_size=24 must equal rl.prompts_per_batch" in err
  assert not (tmp_path / "root").exists()  # no run started
  spec["runs"][1]["set"] = ["train.batch_size=32"]
  sweeps.validate_configs(runs_of(tmp_path, spec))  # whole rollouts: fine


def test_a_relaunched_sweep_skips_finished_runs_and_summarises_from_workdirs(tmp_path, capsys):
  spec = {"name": "lr", "command": "train", "config": "tiny", "set": TINY,
          "grid": {"train.lr": [0.001, 0.003]}, "concurrency": 2}
  path = write(tmp_path, spec)
  rows = sweeps.run_sweep(path, root=tmp_path)
  runs = runs_of(tmp_path, spec)
  assert all(sweeps.is_done(r) for r in runs)
  assert [r["run"] for r in rows] == [r.name for r in runs]
  assert all(r["steps"] == 2 and r["done"] for r in rows)
  mtimes = [(r.workdir / "metrics.jsonl").stat().st_mtime for r in runs]
  capsys.readouterr()
  sweeps.run_sweep(path, root=tmp_path)  # relaunch
  err = capsys.readouterr().err
  assert err.count("done, skipped") == 2 and "started" not in err
  assert [(r.workdir / "metrics.jsonl").stat().st_mtime for r in runs] == mtimes
  summary = [json.loads(x) for x in (tmp_path / "lr" / "summary.jsonl").read_text().splitlines()]
  assert len(summary) == 2 and (tmp_path / "lr" / "summary.md").read_text().startswith("| run")


def test_each_run_prints_a_line_when_it_starts_and_when_it_ends_with_accuracy_and_log(
    tmp_path, capsys):
  events = []
  sweeps.run_sweep(write(tmp_path, script_sweep(tmp_path, [0.5, 0.25])), root=tmp_path,
                   on_event=events.append)
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 4 and [e.kind for e in events].count("started") == 2
  for i, accuracy in enumerate(["50.0%", "25.0%"]):
    log = tmp_path / "s" / f"r{i}" / "sweep.log"
    started = [x for x in lines if x.startswith(f"[sweep s] r{i}: started")]
    finished = [x for x in lines if x.startswith(f"[sweep s] r{i}: finished in ")]
    assert len(started) == len(finished) == 1 and f"log {log}" in started[0]
    assert f"accuracy {accuracy} at 64 steps; log {log}" in finished[0]
    assert "=== " in log.read_text() and "prog.py --workdir" in log.read_text()


def test_a_failed_sweep_ends_in_one_error_line_and_the_summary_of_what_finished(
    tmp_path, capsys):
  path = write(tmp_path, script_sweep(tmp_path, [0.5, "fail"]))
  code = cli.main(["sweep", str(path), "--root", str(tmp_path)])
  out, err = capsys.readouterr()
  assert code == 1 and "Traceback" not in err
  errors = [x for x in err.splitlines() if x.startswith("mro sweep: error: ")]
  assert len(errors) == 1 and "1 run(s) failed: r1" in errors[0]
  assert "[sweep s] r1: failed (exit 3) after" in err
  assert out == ("| run | best val | steps 64 |\n|---|---|---|\n| r0 | - | 50.0 |\n"
                 "| r1 | - | - |\n")
  assert (tmp_path / "s" / "r0" / "done.json").exists()
  assert not (tmp_path / "s" / "r1" / "done.json").exists()
  assert "boom: this run fails" in (tmp_path / "s" / "r1" / "sweep.log").read_text()
  with pytest.raises(sweeps.SweepFailed) as failed:  # the library: the rows travel with it
    sweeps.run_sweep(path, root=tmp_path)
  assert [r["run"] for r in failed.value.rows] == ["r0", "r1"]


def test_runs_may_name_their_own_command_and_an_eval_only_run_its_model(tmp_path):
  spec = {"name": "t", "command": "rl", "config": "mro_sudoku", "set": ["train.steps=2"],
          "eval": {"task": "sudoku", "steps": "L,L/2", "model": "best"},
          "runs": [{"name": "base", "command": "eval", "model": "default"},
                   {"name": "rs", "command": "reject-sample", "set": ["search.k=2"]}]}
  base, rs = runs_of(tmp_path, spec)
  (cmd,) = sweeps.commands(base)
  assert cmd[:6] == ["mro", "eval", "--model", "default", "--out",
                     str(base.workdir / "eval.jsonl")]
  assert dict(zip(cmd[6::2], cmd[7::2])) == {"--task": "sudoku", "--steps": "L,L/2"}
  train_cmd, eval_cmd = sweeps.commands(rs)
  assert train_cmd[:4] == ["mro", "reject-sample", "--config", "mro_sudoku"]
  assert train_cmd[-4:] == ["--set", "train.steps=2", "--set", "search.k=2"]
  assert eval_cmd[:4] == ["mro", "eval", "--model", str(rs.workdir / "best")]


def test_a_verb_on_several_hosts_joins_by_itself_from_the_environment(tmp_path):
  from mro.sweeps.execute import Host, argv
  spec = {"name": "h", "command": "train", "config": "tiny", "hosts": 2,  # local backend
          "runs": [{"name": "two"}, {"name": "one", "hosts": 1}]}
  two, one = runs_of(tmp_path, spec)
  assert (two.hosts, one.hosts) == (2, 1)
  host = Host("h0:1234", 1, 2, 10)
  (cmd,) = sweeps.commands(two)
  assert argv(cmd, host)[:4] == [sys.executable, "-m", "mro.cli", "train"]
  assert argv(["python", "s.py"], host)[:3] == [sys.executable, "-m", "mro.sweeps.host"]
  assert host.env() == {"MRO_COORDINATOR_ADDRESS": "h0:1234", "MRO_NUM_PROCESSES": "2",
                        "MRO_PROCESS_ID": "1", "MRO_HEARTBEAT_S": "10"}


def test_a_local_group_stops_its_other_processes_when_one_fails(tmp_path, monkeypatch):
  """The local multi-process mode: process 1 fails at once, process 0 would run for a
  minute; the group ends with process 1's exit code within seconds, nothing marked done."""
  import subprocess
  import time
  from mro.sweeps import local

  def execute(run, env, *, host, started, **kw):
    proc = subprocess.Popen(["sleep", "60"] if host.process_id == 0 else
                            [sys.executable, "-c", "import sys; sys.exit(3)"])
    started(proc)
    return proc.wait() or 0

  monkeypatch.setattr(local, "execute", execute)
  (run,) = runs_of(tmp_path, {"name": "g", "command": "train", "config": "tiny", "hosts": 2})
  t0 = time.monotonic()
  assert local.run_group(run, {}) == 3
  assert time.monotonic() - t0 < 30 and not sweeps.is_done(run)


@pytest.mark.parametrize("path", sorted(
    (Path(__file__).parents[1] / "experiments" / "sweeps").glob("*.yaml")), ids=str)
def test_every_shipped_sweep_file_loads_and_its_runs_configs_validate(path):
  runs = sweeps.expand(sweeps.load_sweep(path))
  sweeps.validate_configs(runs)
  assert runs and len({r.workdir for r in runs}) == len(runs)


def test_the_ray_backend_names_the_extra_when_ray_is_not_installed(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
  spec = {**script_sweep(tmp_path, [0.5]), "backend": "ray", "root": str(tmp_path)}
  code = cli.main(["sweep", str(write(tmp_path, spec))])
  assert code == 2
  with pytest.raises(ValueError, match=r"needs Ray.*pip install -e '\.\[ray\]'"):
    sweeps.run_sweep(write(tmp_path, spec))
  assert not (tmp_path / "s" / "r0").exists()


def test_a_ray_run_that_no_node_can_hold_is_reported_as_waiting(tmp_path, capsys):
  from mro.sweeps import ray_backend
  from mro.sweeps.progress import Progress

  class Cluster:  # what ray.nodes() says: one 2-CPU node, one dead GPU node
    @staticmethod
    def nodes():
      return [{"Alive": True, "Resources": {"CPU": 2.0}},
              {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}]

  spec = {"name": "w", "command": "script", "script": "x.py", "backend": "ray",
          "root": str(tmp_path), "runs": [{"name": "cpu"}, {"name": "gpu", "resources": {
              "GPU": 1}}, {"name": "two", "hosts": 2}]}
  runs = runs_of(tmp_path, spec)
  ray_backend._warn_unplaceable(Cluster, runs, "STRICT_SPREAD", Progress("w"))
  assert capsys.readouterr().err.splitlines() == [
      "[sweep w] gpu: waiting: 0 node(s) of the cluster have {'CPU': 1, 'GPU': 1} now, 1 "
      "needed; the run waits until they join (ray status lists the nodes)",
      "[sweep w] two: waiting: 1 node(s) of the cluster have {'CPU': 1} now, 2 needed; the "
      "run waits until they join (ray status lists the nodes)"]
  ray_backend._warn_unplaceable(Cluster, runs[2:], "SPREAD", Progress("w"))
  assert capsys.readouterr().err == ""


def test_the_summary_shows_accuracy_per_example_group_when_the_eval_names_groups(tmp_path):
  spec = script_sweep(tmp_path, [0.5], name="g")
  (run,) = runs_of(tmp_path, spec)
  run.workdir.mkdir(parents=True)
  rows = [{"task": "sudoku", "steps": s, "n": 8, "accuracy": a,
           "groups": {"unique": {"n": 6, "accuracy": u}, "several": {"n": 2, "accuracy": v}}}
          for s, a, u, v in ((24, 1.0, 1.0, 1.0), (6, 0.75, 0.875, 0.375))]
  (run.workdir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  table = sweeps.summary.rows([run])
  assert [r["groups"] for r in table] == [{"unique": 1.0, "several": 1.0},
                                          {"unique": 0.875, "several": 0.375}]
  head, _, line = sweeps.format_summary(table).splitlines()
  assert head == ("| run | best val | steps 24 | steps 6 | steps 24 several | "
                  "steps 24 unique | steps 6 several | steps 6 unique |")
  assert line == "| r0 | - | 100.0 | 75.0 | 100.0 | 100.0 | 37.5 | 87.5 |"


# A program that records each attempt, then fails the first one (a run killed mid-eval).
FLAKY = """import json, pathlib, sys
out = pathlib.Path(sys.argv[2]) / "eval.jsonl"
attempt = len(out.read_text().splitlines()) + 1 if out.exists() else 1
with open(out, "a") as f:
  f.write(json.dumps({"task": "arith", "steps": attempt, "n": 8, "accuracy": 0.5}) + "\\n")
sys.exit(3 if attempt == 1 else 0)
"""


def test_a_rerun_keeps_the_results_an_unfinished_run_already_wrote(tmp_path):
  script = tmp_path / "flaky.py"
  script.write_text(FLAKY)
  spec = write(tmp_path, {"name": "k", "command": "script", "script": str(script),
                          "runs": [{"name": "r"}]})
  assert cli.main(["sweep", str(spec), "--root", str(tmp_path)]) != 0
  assert cli.main(["sweep", str(spec), "--root", str(tmp_path)]) == 0
  rows = (tmp_path / "k" / "r" / "eval.jsonl").read_text().splitlines()
  assert [json.loads(r)["steps"] for r in rows] == [1, 2]  # the first attempt's row kept
