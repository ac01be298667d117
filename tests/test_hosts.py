"""Joining the processes of a multi-host run (`mro.hosts`): where the coordinator comes from,
which clusters are detected, what a partial setting is told, how differing settings are
named, and that with one process the collective helpers are plain calls. (Two real
processes: test_multihost_verbs.py.)"""

import numpy as np
import pytest

from models.sharding import MeshConfig, from_process_rows, make_mesh, process_rows
from mro import hosts

SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
         "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("environ, cluster", [
    ({}, None),
    (SLURM, "SLURM"),
    ({**SLURM, "SLURM_NTASKS": "1"}, None),  # one task: nothing to join
    ({k: v for k, v in SLURM.items() if k != "SLURM_PROCID"}, None),  # sbatch, not srun
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI"),
    ({"OMPI_COMM_WORLD_SIZE": "1"}, None),
])
def test_clusters_of_several_processes_are_detected(environ, cluster):
  assert hosts.detect_cluster(environ, tpu_vm=False) == cluster


def test_a_tpu_vm_is_a_cluster_unless_told_to_skip_its_metadata():
  assert hosts.detect_cluster({}, tpu_vm=True) == "TPU"
  assert hosts.detect_cluster({"TPU_SKIP_MDS_QUERY": "1"}, tpu_vm=True) is None


def test_flags_come_before_the_environment_and_one_process_joins_nothing():
  env = {"MRO_COORDINATOR_ADDRESS": "h:1", "MRO_NUM_PROCESSES": "4", "MRO_PROCESS_ID": "3"}
  assert hosts._flag_values(None, None, None, env) == ("h:1", 4, 3, "environment")
  assert hosts._flag_values("g:2", 2, 0, env) == ("g:2", 2, 0, "flags")
  assert hosts._flag_values(None, None, None, {}) is None
  assert hosts.join(environ={}) == "one process"  # this test process stays alone
  assert hosts.join("localhost:1", 1, 0, environ={}) == "one process"


@pytest.mark.parametrize("flags, environ, match", [
    (("h:1", None, None), {}, "missing --num-processes, --process-id"),
    ((None, None, None), {"MRO_NUM_PROCESSES": "2"}, "missing MRO_COORDINATOR_ADDRESS, "
                                                     "MRO_PROCESS_ID"),
    (("h:1", 2, 2), {}, r"--process-id=2 must be in 0..--num-processes-1 = 0..1"),
    (("h", 2, 0), {}, "--coordinator must be HOST:PORT"),
    ((None, None, None), {"MRO_COORDINATOR_ADDRESS": "h:1", "MRO_NUM_PROCESSES": "two",
                          "MRO_PROCESS_ID": "0"}, "must be integers"),
])
def test_a_partial_or_bad_setting_is_refused_by_name(flags, environ, match):
  with pytest.raises(ValueError, match=match):
    hosts.join(*flags, environ=environ)


def test_differing_settings_are_named_field_by_field():
  same = {"train": {"lr": 0.001, "steps": 4}, "mesh": {"data": 2}}
  other = {"train": {"lr": 0.002, "steps": 4}, "mesh": {"data": 2, "fsdp": 1}}
  assert hosts.differences([same, same]) == []
  assert hosts.differences([same, same, other]) == [
      "mesh.fsdp: None (process 0) vs 1 (process 2)",
      "train.lr: 0.001 (process 0) vs 0.002 (process 2)"]
  hosts.agree("config", same)  # one process agrees with itself


def test_with_one_process_the_collectives_are_plain_calls(tmp_path):
  assert hosts.broadcast({"a": 1}) == {"a": 1} and hosts.allgather(3) == [3]
  assert hosts.on_main(lambda: 5) == 5 and hosts.is_main()
  (tmp_path / "f.txt").write_text("x")
  assert hosts.shared_directory(tmp_path, lambda d: (d / "f.txt").read_text()) == "x"
  with pytest.raises(KeyError):
    hosts.on_main(lambda: {}["missing"])


def test_one_process_feeds_every_row_of_the_global_batch():
  mesh = make_mesh(MeshConfig(2, 2, 2))
  rows = process_rows(mesh, 8)
  assert rows.tolist() == list(range(8))
  batch = {"tokens": np.arange(16).reshape(8, 2), "mask": np.arange(8) % 2 == 0}
  placed = from_process_rows(batch, mesh, 8)
  assert placed["tokens"].shape == (8, 2) and placed["tokens"].sharding.spec[0] == \
      ("data", "fsdp")
  np.testing.assert_array_equal(np.asarray(placed["tokens"]), batch["tokens"])
  with pytest.raises(ValueError, match="batch size 6 is not divisible"):
    process_rows(mesh, 6)
