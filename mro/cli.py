"""The `mro` command: parse arguments, call one library function per verb, print.

Sampler, search and reward flags come from the one table in `mro/options.py`, which maps
each flag onto a field of `SamplerConfig`, `SearchConfig` or `RewardConfig`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` can be imported

# The imports below follow the line above (pyproject: E402 is off for this file).
from models import convert
from models.sharding import make_mesh, parse_mesh
from mro import config, hosts, options, paths, plan, sweeps
from mro.evaluation import diagnostic, plot, protocols, report
from mro.evaluation.runner import run_eval
from mro.evaluation.settings import EvalConfig
from mro.files import append_jsonl, check_distinct_paths, check_writable
from mro.messages import MESSAGE_LIMIT, shortened
from mro.method.finetuning import reject_sampling, rl
from mro.method.search.settings import CascadeConfig, SearchConfig
from mro.sample import sample
from mro.sampling.schedule import SamplerConfig
from mro.training import loop
from rewards.combine import RewardConfig
from rewards.tasks import get_task

STEPS_HELP = """\
How gen-length, block-length and steps relate:
  The response has GEN_LENGTH positions, all [MASK] at the start. It is cut into
  GEN_LENGTH / BLOCK_LENGTH blocks, decoded left to right (semi-autoregressive); a
  block is finished before the next one starts. The STEPS denoising steps (one model
  call each) are shared equally by the blocks, and each step of a block commits
  BLOCK_LENGTH / (STEPS / num_blocks) tokens (the first steps take one more if it does
  not divide). So both divisions must be exact, and tokens per step =
  GEN_LENGTH / STEPS overall: fewer steps = faster but more tokens committed at once.
  Examples:  --gen-length 256 --block-length 32 --steps 128  -> 8 blocks x 16 steps,
             2 tokens per step;   --gen-length 64 --block-length 64 --steps 64 -> one
             block, 1 token per step (fully parallel order, no semi-AR blocks).
  --threshold T commits, per step, every masked token of the block whose confidence is
  >= T (at least one), so the number of steps adapts (STEPS is then not used).
"""

FAST_HELP = ("the recommended fast decoding, measured on the shipped tasks: threshold-0.99 "
             "parallel commits (docs/sampling.md); explicit sampler options override "
             "it, e.g. --fast --cache dual for long outputs")
DATA_HELP = ("data file or directory (default: the task's own: generated for sudoku, "
             "countdown and arith, where Sudoku's test puzzles have 8 blanks; the copy in "
             "experiments/data/ for gsm8k and math500). The Sudoku tables of docs/results.md "
             "use experiments/data/sudoku_test_12blanks.csv")
MODEL_HELP = ("a model directory (HF or Orbax), a training workdir, or a shipped name: "
              "default, default-mro (the shipped model of --task, in experiments/models/)")


def task_formats() -> str:
  """One prompt and the matching response per generated task (for --help)."""
  lines = ["Prompt formats (compact style, what the shipped models were trained on):"]
  for name in ("sudoku", "countdown", "arith"):
    ex = get_task(name).examples("test", limit=1)[0]
    lines.append(f"  --task {name:9s} --prompt {ex.prompt!r}\n{'':16s}-> {ex.target}")
  lines.append("  gsm8k, math500: the question text (answers as \\boxed{...} or "
               "<answer>...</answer>)")
  return "\n".join(lines)


# --- verbs -------------------------------------------------------------------------------


# `mro train | reject-sample | rl`: the library function that runs each, and what it says
TRAINING_VERBS = {"train": (loop.run, "trained"),
                  "reject-sample": (reject_sampling.run, "reject sampling: trained"),
                  "rl": (rl.run, "RL: trained")}


def join_hosts(args) -> None:
  """Joins the other processes of a multi-host run (flags, MRO_* environment, or a
  detected cluster; docs/multihost.md) before anything touches a device."""
  how = hosts.join(args.coordinator, args.num_processes, args.process_id)
  if how != "one process":
    print(f"mro {args.verb}: {how}", file=sys.stderr, flush=True)


def cmd_training(args) -> int:
  join_hosts(args)
  run, said = TRAINING_VERBS[args.verb]
  record = run(config.load_config(args.config, args.set, command=args.verb), args.workdir)
  where = (f"model in {args.workdir}/model" if args.verb == "train" else
           f"best model in {args.workdir}/best, last in {args.workdir}/model")
  loss = f" (loss {record['loss']:.4f})" if "loss" in record else ""
  print(f"{said} to step {record.get('step')}{loss}; {where}")
  return 0


def cmd_sweep(args) -> int:
  try:
    rows = sweeps.run_sweep(args.file, root=args.root, concurrency=args.concurrency,
                            backend=args.backend, address=args.address, dry_run=args.dry_run)
  except sweeps.SweepFailed as e:
    print(sweeps.format_summary(e.rows), end="")
    print(f"mro sweep: error: {shortened(str(e), MESSAGE_LIMIT)}", file=sys.stderr)
    return 1
  print(sweeps.format_summary(rows), end="")
  return 0


def cmd_sample(args) -> int:
  result = sample(args.model, args.prompt, task=args.task,
                  sampler={**options.overrides(args, SamplerConfig),
                           **({"steps": args.steps} if args.steps is not None else {})},
                  search=args.search, search_fields=options.overrides(args, SearchConfig),
                  reward_fields=options.overrides(args, RewardConfig), scorer=args.scorer,
                  seed=args.seed, fast=args.fast,
                  cascade_fields=options.overrides(args, CascadeConfig))
  for prompt, text in zip(args.prompt, result.texts):
    print(f"{prompt}{text}" if args.echo else text)
  if result.cascade is not None:
    print(f"cascade: forward passes per prompt {list(result.prompt_nfe)} (stages "
          f"{' -> '.join(result.cascade.stages)})", file=sys.stderr)
  if result.search is not None:
    print(f"search: {result.nfe} forward passes per prompt (+{result.scorer_nfe} scorer); "
          f"rewards {result.rewards.spec}", file=sys.stderr)
  return 0


def cmd_eval(args) -> int:
  join_hosts(args)
  if args.plot and not args.plot.lower().endswith(".png"):
    raise ValueError(f"--plot must name a .png file, got {args.plot}")
  outputs = {"--out": args.out, "--plot": args.plot, "the generations file (from --out)":
             args.out and report.generations_path(args.out)}
  check_distinct_paths({"--data": args.data, **outputs})
  hosts.on_main(lambda: check_writable(outputs))  # process 0 writes them
  cfg = EvalConfig.build(
      args.task, args.protocol, search=args.search, fast=args.fast, model=args.model,
      scorer=args.scorer, steps=() if args.steps is None else args.steps, data=args.data,
      split=args.split, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
      data_seed=args.data_seed,
      out=args.out, force=args.force, **{f: getattr(args, f) for f in options.DESTS})
  ran = []  # the settings run now (the others were already in --out)

  def progress(record) -> None:
    ran.append(record)
    print(report.progress_line(record), file=sys.stderr, flush=True)

  records = run_eval(args.model, cfg, on_record=progress)
  print(report.format_table(records))
  if args.out and ran:
    print(f"{len(ran)} setting(s) appended to {args.out}; generations to "
          f"{report.generations_path(args.out)}")
  elif args.out:
    print(f"nothing appended: every setting was already in {args.out} (--force re-runs)")
  if args.plot and hosts.is_main():
    print(f"plot written to {plot.plot_results(args.out or records, args.plot)}")
  return 0


def cmd_lm_eval(argv: list[str]) -> int:
  """`mro lm-eval ...`: lm-eval's own command line with the `mro` model registered."""
  try:
    from mro.evaluation import lm_harness  # needs lm-evaluation-harness: extra [lm-eval]
  except ImportError as e:
    raise ValueError(f"mro lm-eval needs lm-evaluation-harness: pip install -e '.[lm-eval]' "
                     f"({e})") from None
  return lm_harness.main(argv)


def cmd_diagnose(args) -> int:
  try:
    n_verify = tuple(options.count_or_all(x.strip()) for x in args.n_verify.split(","))
  except argparse.ArgumentTypeError as e:
    raise ValueError(f"--n-verify: {e}") from None
  try:
    answer_rows = None if args.answer_rows == "none" else \
        options.count_or_all(args.answer_rows)
  except argparse.ArgumentTypeError as e:
    raise ValueError(f"--answer-rows: {e}") from None
  cfg = diagnostic.DiagnosticConfig(EvalConfig.build(  # the fixed schedule unless a rule is given
      args.task, args.protocol, search="best-of-n", rule=False, steps=args.steps, data=args.data,
      split=args.split, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
      scorer=args.scorer, **options.flags_of(args, SamplerConfig, SearchConfig)),
      n_verify=n_verify, answer_rows=answer_rows)
  check_distinct_paths({"--data": args.data, "--out": args.out})
  check_writable({"--out": args.out})
  rows, heads = diagnostic.run_diagnostic(args.model, cfg)
  print(diagnostic.format_table(rows, heads))
  if args.out:
    append_jsonl(args.out, [{"model": args.model, "commit": paths.git_commit(),
                             "task": args.task, "steps": args.steps,
                             "data": paths.relative(args.data), **heads[r["subset"]], **r}
                            for r in rows])
    print(f"rows appended to {args.out}")
  return 0


def cmd_plot(args) -> int:
  out = args.out or str(Path(args.results).with_suffix(".png"))
  check_distinct_paths({"the results file": args.results, "--out": out})
  check_writable({"--out": out})
  print(f"plot written to {plot.plot_results(args.results, out, x=args.x)}")
  return 0


def cmd_convert(args) -> int:
  check_writable({"dst": args.dst}, directory=True)
  mesh = None
  if args.mesh:
    mesh = make_mesh(parse_mesh(args.mesh))
  out = convert.convert(args.src, args.dst, to=args.to,
                        max_shard_bytes=convert.parse_size(args.max_shard_size), mesh=mesh,
                        dtype=args.dtype)
  print(f"wrote {convert.detect_format(out)} model to {out}")
  return 0


def cmd_plan(args) -> int:
  cfg = plan.PlanConfig(
      preset=args.preset, layers=args.layers, mesh=parse_mesh(args.mesh), batch=args.batch,
      seq=args.seq,
      prompt_len=args.prompt_len, grad_accum=args.grad_accum, remat=not args.no_remat,
      loss_chunk=args.loss_chunk, sample_batch=args.sample_batch,
      sample_prompt=args.sample_prompt, gen_length=args.gen_length,
      block_length=args.block_length, steps=args.steps, train=not args.sample_only,
      sample=not args.train_only, max_devices=args.max_devices)
  check_writable({"--json": args.json})
  try:
    report = plan.plan(cfg)
  except RuntimeError as e:
    raise ValueError(str(e)) from e
  print(plan.format_report(report))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=2)
  return 0


# --- parsers -----------------------------------------------------------------------------


def _search_group(p: argparse.ArgumentParser, *, defaults: SearchConfig | None = None,
                  rewards: RewardConfig | None = None, rewards_note: str = "",
                  cascade: bool = False) -> None:
  g = p.add_argument_group("MRO test-time search (docs/method.md §5)")
  g.add_argument("--search", choices=("none", "mro", "best-of-n") + ("cascade",) * cascade,
                 default="none",
                 help="mro: expand k candidates every --group-steps steps, score, select; "
                      "best-of-n: k independent samples picked with the same rewards"
                      + ("; cascade: decode cheaply, verify each answer with R_tv, decode "
                         "again more carefully only the answers that fail (--stages)"
                         if cascade else "") + " (default: none, the plain sampler)")
  g.add_argument("--scorer", default=None,
                 help="causal scorer of the ppl reward: a model dir, or 'default' (the "
                      "shipped one of --task; also the default for a shipped --model)")
  options.add_options(p, SearchConfig, "search options (with --search)", defaults=defaults)
  options.add_options(p, RewardConfig, "rewards of the search" + rewards_note,
                      defaults=rewards)
  if cascade:
    options.add_options(p, CascadeConfig, "verified cascade (with --search cascade; beyond "
                        "the paper, docs/method.md)")


def _host_group(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group(
      "many hosts (docs/multihost.md): the same command on every host; default: "
      "MRO_COORDINATOR_ADDRESS / MRO_NUM_PROCESSES / MRO_PROCESS_ID, else a TPU pod, "
      "SLURM or Open MPI job is detected, else one process")
  g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="process 0's host and a free port there")
  g.add_argument("--num-processes", type=int, default=None, help="processes in the run")
  g.add_argument("--process-id", type=int, default=None, help="this one's, 0..N-1")


def _add_train_parsers(verbs) -> None:
  for verb, text in (
      ("train", "train a model (resumes if the workdir has checkpoints)"),
      ("reject-sample", "MRO reject sampling: search, keep high-reward trajectories, "
       "fine-tune on them (config sections start, search, rewards, reject, validation)"),
      ("rl", "RL: MRO-RL (REINFORCE over SGRO groups with importance sampling) or, with "
       "rl.method, diffu-GRPO / coupled-GRPO / wd1 (config sections start, rewards, rl, "
       "diffu_grpo, coupled_grpo, wd1, validation; docs/rl.md)")):
    p = verbs.add_parser(verb, help=text, description=text)
    p.add_argument("--config", required=True,
                   help="a shipped config name (experiments/configs/NAME.yaml) or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config field, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("--workdir", required=True,
                   help="the run's directory: config, checkpoints, metrics, exported model; "
                        "running again on it resumes")
    _host_group(p)
    p.set_defaults(func=cmd_training)

  p = verbs.add_parser("sweep", help="run a grid of runs (each in its own workdir; finished "
                       "runs are skipped on relaunch) and summarise them")
  p.add_argument("file", help="experiments/sweeps/NAME.yaml or .py")
  p.add_argument("--root", default=None, help="where sweep workdirs go (default: the file's "
                 "root, else runs/sweeps; with --backend ray: shared storage, absolute)")
  p.add_argument("--concurrency", type=int, default=None, help="runs at a time (local)")
  p.add_argument("--backend", choices=("local", "ray"), default=None,
                 help="where runs go (default: the file's backend, else local)")
  p.add_argument("--address", default=None, help="--backend ray: the cluster, auto or "
                 "ray://HOST:PORT (default: the file's ray.address, else RAY_ADDRESS or a "
                 "local cluster)")
  p.add_argument("--dry-run", action="store_true", help="list runs and summarise only")
  p.set_defaults(func=cmd_sweep)


SAMPLE_DEFAULTS = """\
  Defaults (sample): the model's recorded settings (a shipped model's sampler.json, or a
  workdir's sampler section), else gen-length 64, block-length 32, steps 64. A new
  --gen-length without --steps means steps = gen-length; the block stays unless it no
  longer divides (then one block, block-length = gen-length).
"""


def _add_sample_parser(verbs, for_help: bool) -> None:
  epilog = STEPS_HELP + SAMPLE_DEFAULTS + ("\n" + task_formats() if for_help else "")
  p = verbs.add_parser("sample", help="generate text from a model",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
  p.add_argument("--model", required=True, help=MODEL_HELP)
  p.add_argument("--prompt", action="append", required=True,
                 help="prompt text (repeat for a batch; prompts may differ in length)")
  p.add_argument("--task", default=None,
                 help="the prompts' task: picks the shipped model of --model default, and "
                      "enables the quality reward of --search")
  p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
  p.add_argument("--echo", action="store_true", help="print the prompt before the output")
  p.add_argument("--steps", type=int, default=None,
                 help="denoising steps (default: the model's recorded setting)")
  p.add_argument("--fast", action="store_true", help=FAST_HELP)
  options.add_options(p, SamplerConfig, "sampler (default: the model's recorded settings, "
                      "else these)")
  _search_group(p, rewards_note=" (default: tv, + ppl with a scorer, + q with --task)",
                cascade=True)
  p.set_defaults(func=cmd_sample)


EVAL_HELP = """Steps: a comma-separated list; each value is an integer or a fraction of the response
length: L (= gen-length, one token per step; also "full"), L/2, L/4, ... Each must
divide as the sampler requires (see below). Without --steps: the protocol's steps.

Protocols fill in the style, sampler and search defaults per task; explicit options
override them and the results record the resolved values:
{protocols}

{steps_help}"""


def _add_eval_parser(verbs) -> None:
  compact = protocols.get_protocol("compact")
  p = verbs.add_parser(
      "eval", help="benchmark accuracy at several step counts",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=EVAL_HELP.format(protocols=protocols.describe(), steps_help=STEPS_HELP))
  p.add_argument("--model", default="default", help=MODEL_HELP + " (default: default)")
  p.add_argument("--task", required=True, help="sudoku, countdown, arith, gsm8k, math500")
  p.add_argument("--data", default=None, help=DATA_HELP)
  p.add_argument("--split", default="test", choices=("train", "validation", "test"),
                 help="which split of a generated task or of GSM8K (default: test)")
  p.add_argument("--limit", type=int, default=None,
                 help="first N examples (default: the protocol's, else the task's)")
  p.add_argument("--steps", default=None, help="e.g. 2,4,8,16 or L,L/2,L/4")
  p.add_argument("--protocol", default="compact",
                 help="compact, llada, d1 or mro (listed below; default: compact)")
  p.add_argument("--batch-size", type=int, default=16, help="prompts per batch (default: 16)")
  p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
  p.add_argument("--data-seed", type=int, default=0,
                 help="seed of generated test sets (default: 0)")
  p.add_argument("--out", default=None,
                 help="append one JSON line per setting here (and every response to "
                      "<stem>.generations.jsonl); settings already there are skipped")
  p.add_argument("--force", action="store_true",
                 help="re-run settings that --out already holds")
  p.add_argument("--plot", default=None, help="also draw accuracy vs steps into this PNG")
  p.add_argument("--fast", action="store_true", help=FAST_HELP)
  options.add_options(p, SamplerConfig, "sampler (default: the protocol's)",
                      show_default=False)
  _search_group(p, defaults=compact.search, rewards=compact.rewards,
                rewards_note=" (defaults of the compact protocol; --protocol mro: the "
                "paper's tv,ppl,q by vote at temperature 0.25)", cascade=True)
  _host_group(p)
  p.set_defaults(func=cmd_eval)

  verbs.add_parser("lm-eval", add_help=False, help="run lm-evaluation-harness tasks on a "
                   "model: lm-eval's own flags, --model mro added; --model_args takes "
                   "`mro eval`'s options (docs/lm_eval.md; extra [lm-eval])")

  p = verbs.add_parser("diagnose", help="how well each reward ranks candidates by final "
                       "correctness (AUROC, within-prompt pairwise accuracy, pick accuracy "
                       "per group)")
  p.add_argument("--model", default="default", help=MODEL_HELP + " (default: default)")
  p.add_argument("--task", required=True, help="sudoku, countdown, arith, gsm8k, math500")
  p.add_argument("--data", default=None, help=DATA_HELP)
  p.add_argument("--split", default="test", choices=("train", "validation", "test"),
                 help="which split (default: test)")
  p.add_argument("--limit", type=int, default=128, help="prompts (default: 128)")
  p.add_argument("--steps", required=True, help="one steps value, e.g. L/4 or 6")
  p.add_argument("--protocol", default="compact", help="as in mro eval (default: compact)")
  p.add_argument("--batch-size", type=int, default=16, help="prompts per batch (default: 16)")
  p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
  p.add_argument("--n-verify", default="1,all",
                 help="R_tv variants: positions re-predicted per group, or 'all' the "
                      "group committed (default: 1,all)")
  p.add_argument("--answer-rows", default="all",
                 help="tv@answer, R_tv of each whole final answer: re-masked in N "
                      "interleaved rows per candidate, 'all' (one per position) or 'none' "
                      "(default: all)")
  p.add_argument("--scorer", default=None, help="causal scorer for R_ppl (default: the "
                 "shipped one for a shipped model; none: R_ppl is left out)")
  p.add_argument("--out", default=None, help="append the table's rows here as JSON lines")
  options.add_options(p, SamplerConfig, "sampler (default: the protocol's, with the fixed "
                      "schedule)",
                      show_default=False)
  options.add_options(p, SearchConfig, "candidates (k independent samples; select is not "
                      "used)", skip=("select", "resample-temperature", "n-live",
                                     "final-verify"), defaults=compact.search)
  p.set_defaults(func=cmd_diagnose)

  p = verbs.add_parser("plot", help="draw accuracy vs steps from `mro eval` results")
  p.add_argument("results", help="a results JSONL file written by `mro eval --out`")
  p.add_argument("--out", default=None, help="PNG path (default: the results path, .png)")
  p.add_argument("--x", default="steps", choices=("steps", "nfe", "seconds"),
                 help="the x axis: denoising steps, forward passes per prompt (compare "
                 "searches, thresholds and plain sampling at equal cost) or wall time")
  p.set_defaults(func=cmd_plot)


def _add_real_scale_parsers(verbs) -> None:
  p = verbs.add_parser("convert", help="HF safetensors <-> Orbax model directory (lossless)")
  p.add_argument("src", help="a HF model directory (config.json + safetensors) or an Orbax "
                             "one written by `mro convert`")
  p.add_argument("dst", help="new output directory")
  p.add_argument("--to", choices=("hf", "orbax"), default=None,
                 help="target format (default: the other one)")
  p.add_argument("--max-shard-size", default="5GB",
                 help="largest safetensors file when writing HF, e.g. 5GB, 500MB")
  p.add_argument("--mesh", default=None, help="place weights on this mesh in between, "
                 "e.g. fsdp=8 (default: one device)")
  p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                 help="cast the weights (not lossless), e.g. bfloat16 to halve a model")
  p.set_defaults(func=cmd_convert)

  p = verbs.add_parser("plan", help="per-device memory and FLOPs of training and sampling "
                       "on a mesh, from XLA (compiled ahead of time on fake devices)")
  p.add_argument("--preset", default="llada_8b",
                 help="model preset (tiny, small, llada_8b, dream_7b, llada_moe_7b)")
  p.add_argument("--layers", type=int, default=0,
                 help="the preset's shapes with this many layers (0 = the preset's own)")
  p.add_argument("--mesh", default="data=1", help="e.g. data=8,fsdp=4,tensor=2")
  p.add_argument("--batch", type=int, default=0,
                 help="training sequences per step, global (default: one per data-parallel "
                      "device, data x fsdp)")
  p.add_argument("--seq", type=int, default=2048, help="training sequence length")
  p.add_argument("--prompt-len", type=int, default=0,
                 help="SFT prompt columns (0 = pretraining: loss on every position)")
  p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (default: 1)")
  p.add_argument("--no-remat", action="store_true", help="plan without per-layer remat")
  p.add_argument("--loss-chunk", type=int, default=0,
                 help="data.loss_chunk: output layer on masked chunks only (0 = off)")
  p.add_argument("--sample-batch", type=int, default=0, help="sampler batch (0 = --batch)")
  p.add_argument("--sample-prompt", type=int, default=256, help="sampler prompt length")
  p.add_argument("--gen-length", type=int, default=256,
                 help="sampler response length (default: 256)")
  p.add_argument("--block-length", type=int, default=32,
                 help="sampler block length (default: 32)")
  p.add_argument("--steps", type=int, default=0, help="denoising steps (0 = gen-length)")
  only = p.add_mutually_exclusive_group()
  only.add_argument("--train-only", action="store_true", help="plan the training step only")
  only.add_argument("--sample-only", action="store_true", help="plan the sampler only")
  p.add_argument("--json", default=None, help="also write the full report here")
  p.add_argument("--max-devices", type=int, default=plan.MAX_DEVICES,
                 help=f"refuse larger meshes (default: {plan.MAX_DEVICES})")
  p.set_defaults(func=cmd_plan)


def build_parser(for_help: bool = False) -> argparse.ArgumentParser:
  """The `mro` parser; `for_help` adds help text that needs the tasks (slower)."""
  parser = argparse.ArgumentParser(prog="mro", description=(
      "Masked diffusion LMs in JAX: train, sample, evaluate, MRO search and training."))
  verbs = parser.add_subparsers(dest="verb", required=True)
  _add_train_parsers(verbs)
  _add_sample_parser(verbs, for_help)
  _add_eval_parser(verbs)
  _add_real_scale_parsers(verbs)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv[:1] == ["lm-eval"]:  # lm-eval parses its own flags
    try:
      return cmd_lm_eval(argv[1:])
    except (ValueError, OSError) as e:
      print(f"mro lm-eval: error: {shortened(str(e), MESSAGE_LIMIT)}", file=sys.stderr)
      return 2
  args = build_parser(for_help=bool({"-h", "--help"} & set(argv))).parse_args(argv)
  try:
    return args.func(args)
  except (ValueError, OSError) as e:  # a bounded message, whatever value it quotes
    print(f"mro {args.verb}: error: {shortened(str(e), MESSAGE_LIMIT)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
