"""The Ray backend: each run is a Ray task that asks for the run's resources and runs the
same programs as the local backend (`execute`) on whichever node Ray picks, in the run's
workdir on storage every node sees.

Faults: the programs die with the task's worker process (Ray kills a dead worker's
process group; PR_SET_PDEATHSIG too, where Ray does not), and a task whose worker or node
dies, or whose program is killed by a signal, is retried by Ray (`ray.max_retries`); the
retry reruns the programs, which resume from the workdir's last checkpoint.

A run on N hosts is one placement group of N bundles: one task per bundle, process 0's
node and a free port as the jax.distributed coordinator; when any of them dies, the
others are stopped and the whole group starts again (same bound).

Everything that reads or writes workdirs (finished runs, outcomes, the summary) runs on
the cluster, so the driver may be a Ray client that does not mount the storage.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from mro.sweeps.execute import Host, execute, mark_done, run_env, working_dir
from mro.sweeps.progress import Progress
from mro.sweeps.spec import Run, SweepSpec
from mro.sweeps.summary import is_done, outcome, summarize


class ProcessDied(RuntimeError):
  """A run's process ended by a signal (killed, out of memory): Ray retries the run."""


def import_ray():
  try:
    import ray  # an optional dependency: only the ray backend needs it
  except ImportError as e:
    raise ValueError("the ray backend needs Ray, an optional dependency: pip install -e "
                     "'.[ray]' (or pip install 'mro-diffusion[ray]')") from e
  return ray


def task_options(resources: dict[str, float]) -> dict[str, Any]:
  """Ray task options for a run's (per host) resources: CPU, GPU, memory, custom ones."""
  custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU", "memory")}
  opts = {"num_cpus": resources.get("CPU", 1), "num_gpus": resources.get("GPU", 0),
          "resources": custom}
  if "memory" in resources:
    opts["memory"] = resources["memory"]
  return opts


def _bundle(resources: dict[str, float]) -> dict[str, float]:
  bundle = {"CPU": resources.get("CPU", 1), **resources}
  return {k: v for k, v in bundle.items() if v}


# --- what runs on the cluster ---------------------------------------------------------


def _node() -> str:
  return import_ray().util.get_node_ip_address()


def _one_host(run: Run, sweep_env: dict[str, str], events, cwd: str) -> dict[str, Any]:
  node = _node()
  events.put({"run": run.name, "node": node, "pid": os.getpid()})
  code = execute(run, run_env(sweep_env, os.environ), tie_to_parent=True,
                 note=f"Ray node {node}", cwd=working_dir(cwd))
  if code < 0:
    raise ProcessDied(f"run {run.name}: its process was killed by signal {-code}")
  return {"code": code, "outcome": outcome(run) if code == 0 else ""}


def _coordinator() -> str:
  with socket.socket() as s:
    s.bind(("", 0))
    port = s.getsockname()[1]
  return f"{_node()}:{port}"


def _host(run: Run, sweep_env: dict[str, str], host: Host, cwd: str) -> int:
  return execute(run, run_env(sweep_env, os.environ), host=host, tie_to_parent=True,
                 write_done=False, note=f"Ray node {_node()}, process {host.process_id}",
                 cwd=working_dir(cwd))


def _wait_hosts(ray, refs) -> int | None:
  """0 when every host succeeds; else the first failure's exit code (None: a process or
  its node died), after stopping the others."""
  pending = list(refs)
  while pending:
    [ref], pending = ray.wait(pending, num_returns=1)
    try:
      code = ray.get(ref)
    except Exception:  # the worker or its node died
      code = None
    if code != 0:
      for other in pending:
        ray.cancel(other, force=True)
      return None if code is None or code < 0 else code
  return 0


def _many_hosts(run: Run, sweep_env: dict[str, str], events, cwd: str, retries: int,
                placement: str, heartbeat_s: int) -> dict[str, Any]:
  ray = import_ray()
  from ray.util.placement_group import placement_group, remove_placement_group  # optional
  from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup  # ditto
  for _ in range(retries + 1):
    group = placement_group([_bundle(run.resources)] * run.hosts, strategy=placement)
    try:
      ray.get(group.ready())
      coordinator = ray.get(ray.remote(_coordinator).options(
          num_cpus=0, scheduling_strategy=InGroup(group, 0)).remote())
      events.put({"run": run.name, "node": coordinator, "pid": None,
                  "where": f"{run.hosts} hosts, coordinator {coordinator}"})
      refs = [ray.remote(_host).options(
          **task_options(run.resources), max_retries=0,
          scheduling_strategy=InGroup(group, i)).remote(
              run, sweep_env, Host(coordinator, i, run.hosts, heartbeat_s), cwd)
          for i in range(run.hosts)]
      code = _wait_hosts(ray, refs)
    finally:
      remove_placement_group(group)
    if code is not None:
      if code == 0:
        mark_done(run)
      return {"code": code, "outcome": outcome(run) if code == 0 else ""}
  raise ProcessDied(f"run {run.name}: a process died in each of {retries + 1} attempts")


# --- the driver -----------------------------------------------------------------------


def _last_line(error: Exception) -> str:
  lines = [x.strip() for x in str(error).splitlines() if x.strip()]
  return (lines[-1] if lines else type(error).__name__)[:300]


def _submit(ray, spec: SweepSpec, run: Run, events):
  sweep_env, cwd = dict(spec.env), os.getcwd()
  if run.hosts == 1:
    return ray.remote(_one_host).options(
        **task_options(run.resources), max_retries=spec.ray.max_retries,
        retry_exceptions=[ProcessDied]).remote(run, sweep_env, events, cwd)
  return ray.remote(_many_hosts).options(num_cpus=0, max_retries=0).remote(
      run, sweep_env, events, cwd, spec.ray.max_retries, spec.ray.placement,
      spec.ray.heartbeat_s)


def _warn_unplaceable(ray, runs: list[Run], placement: str, progress: Progress) -> None:
  """A line for each run that the cluster's live nodes cannot hold now (it waits)."""
  nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
  for run in runs:
    need = _bundle(run.resources)
    fit = sum(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes)
    wanted = run.hosts if run.hosts > 1 and placement == "STRICT_SPREAD" else 1
    if fit < wanted:
      progress.waiting(run, f"{fit} node(s) of the cluster have {need} now, {wanted} "
                       "needed; the run waits until they join (ray status lists the nodes)")


def _drain(events, progress: Progress, by_name: dict[str, Run]) -> None:
  if n := events.qsize():
    for e in events.get_nowait_batch(n):
      progress.started(by_name[e["run"]], e["node"], e["pid"], e.get("where"))


def run_ray(spec: SweepSpec, runs: list[Run], progress: Progress
            ) -> tuple[list[str], list[dict[str, Any]]]:
  """Runs the unfinished `runs` on the cluster; (names of failed runs, summary rows)."""
  ray = import_ray()
  from ray.util.queue import Queue  # Ray is optional: imported once a sweep runs on it
  if not ray.is_initialized():
    ray.init(address=spec.ray.address)
  on_cluster = lambda f, *args: ray.get(ray.remote(f).options(num_cpus=0).remote(*args))
  done = on_cluster(lambda rs: [is_done(r) for r in rs], runs)
  for run in (r for r, d in zip(runs, done) if d):
    progress.skipped(run)
  _warn_unplaceable(ray, [r for r, d in zip(runs, done) if not d], spec.ray.placement,
                    progress)
  events = Queue(actor_options={"num_cpus": 0})
  refs = {_submit(ray, spec, run, events): run for run, d in zip(runs, done) if not d}
  by_name, failed = {r.name: r for r in runs}, []
  while refs:
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
    _drain(events, progress, by_name)
    for ref in ready:
      run = refs.pop(ref)
      try:
        result = ray.get(ref)
        code, detail = result["code"], result["outcome"]
      except Exception as e:  # retries used up, or the task could not run
        code, detail = None, _last_line(e)
      progress.ended(run, code, detail)
      if code != 0:
        failed.append(run.name)
  events.shutdown()
  return failed, on_cluster(summarize, runs, spec.sweep_dir)
