"""The `mro` command: parse arguments, call the library, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from mro.sampling import schedule  # noqa: E402

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
  Defaults: steps = gen-length; block-length = 32, or gen-length when 32 does not
  divide it.
  --threshold T commits, per step, every masked token of the block whose confidence is
  >= T (at least one), so the number of steps adapts (STEPS is then not used).
"""


def _add_sampler_args(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group("sampler (see the note below on how these relate)")
  g.add_argument("--gen-length", type=int, default=None, help="response length in tokens")
  g.add_argument("--steps", type=int, default=None, help="denoising steps (model calls)")
  g.add_argument("--block-length", type=int, default=None,
                 help="semi-autoregressive block size; must divide gen-length")
  g.add_argument("--temperature", type=float, default=None, help="0 = greedy (argmax)")
  g.add_argument("--remasking", choices=schedule.REMASKING, default=None,
                 help="which masked positions to commit first")
  g.add_argument("--threshold", type=float, default=None,
                 help="confidence-threshold parallel decoding (0 < T <= 1)")
  g.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance")


def sampler_config(args, base: schedule.SamplerConfig) -> schedule.SamplerConfig:
  """The base sampler settings with the command line's overrides."""
  import dataclasses
  fields = {"gen_length": args.gen_length, "steps": args.steps,
            "block_length": args.block_length, "temperature": args.temperature,
            "remasking": args.remasking, "threshold": args.threshold,
            "cfg_scale": args.cfg_scale}
  fields = {k: v for k, v in fields.items() if v is not None}
  if "gen_length" in fields and "block_length" not in fields and \
      fields["gen_length"] % base.block_length:
    fields["block_length"] = fields["gen_length"]
  if "gen_length" in fields and "steps" not in fields:
    fields["steps"] = fields["gen_length"]
  return dataclasses.replace(base, **fields)


def cmd_train(args) -> int:
  from mro import config
  from mro.training import loop
  cfg = config.load_config(args.config, args.set)
  record = loop.run(cfg, args.workdir)
  print(f"trained to step {record.get('step')} (loss {record.get('loss', float('nan')):.4f}); "
        f"model in {args.workdir}/model")
  return 0


def cmd_reject(args) -> int:
  from mro import config
  from mro.method import reject
  record = reject.run(config.load_config(args.config, args.set), args.workdir)
  print(f"reject sampling: trained to step {record.get('step')}; best model in "
        f"{args.workdir}/best, last in {args.workdir}/model")
  return 0


def cmd_rl(args) -> int:
  from mro import config
  from mro.method import rl
  record = rl.run(config.load_config(args.config, args.set), args.workdir)
  print(f"MRO-RL: trained to step {record.get('step')}; best model in {args.workdir}/best, "
        f"last in {args.workdir}/model")
  return 0


def cmd_sweep(args) -> int:
  from mro import sweeps
  try:
    rows = sweeps.run_sweep(args.file, root=args.root, concurrency=args.concurrency,
                            backend=args.backend, address=args.address, dry_run=args.dry_run)
  except sweeps.SweepFailed as e:
    print(sweeps.format_summary(e.rows), end="")
    print(f"mro sweep: error: {e}", file=sys.stderr)
    return 1
  print(sweeps.format_summary(rows), end="")
  return 0


def cmd_sample(args) -> int:
  from mro.sampling.textgen import TextSampler
  from mro.loading import load_inference_model, recorded_sampler_config
  cfg = sampler_config(args, recorded_sampler_config(args.model) or schedule.SamplerConfig())
  if args.search != "none":
    return _sample_with_search(args, cfg)
  model, model_cfg, _, tokenizer = load_inference_model(args.model)
  sampler = TextSampler(model, model_cfg, tokenizer)
  for prompt, gen in zip(args.prompt, sampler.generate(args.prompt, cfg, seed=args.seed)):
    print(f"{prompt}{gen.text}" if args.echo else gen.text)
  return 0


def _sample_with_search(args, cfg) -> int:
  """`mro sample --search ...`: rewards default to tv (+ ppl with --scorer, + q with --task)."""
  from mro.method import textsearch as tts
  from mro.loading import resolve_model
  from mro.sampling.textgen import TextSampler
  from mro.loading import load_inference_model
  from rewards.tasks import get_task
  task = get_task(args.task) if args.task else None
  if args.rewards is None:
    args.rewards = ",".join(["tv"] + ["ppl"] * bool(args.scorer) + ["q"] * bool(task))
  scfg, rewards = tts.search_settings(cfg, **_search_args(args))
  scorer = scorer_tok = None
  if args.scorer:
    name = "default-scorer" if args.scorer == "default" else args.scorer
    if name == "default-scorer" and not args.task:
      raise ValueError("--scorer default needs --task (the shipped scorers are per task)")
    scorer, _, _, scorer_tok = load_inference_model(resolve_model(name, args.task or ""))
  model, model_cfg, _, tokenizer = load_inference_model(args.model)
  runner = tts.SearchRunner(TextSampler(model, model_cfg, tokenizer), scorer, scorer_tok)
  examples = None
  if task is not None:  # answers are judged by vote or the verifier: no label is needed
    from rewards.tasks import Example
    examples = [Example(id=f"prompt-{i}", prompt=p, target="", answer="", meta={})
                for i, p in enumerate(args.prompt)]
  results, nfe = runner.search(args.prompt, cfg, scfg, rewards, task=task, examples=examples,
                               seed=args.seed)
  for prompt, r in zip(args.prompt, results):
    print(f"{prompt}{r.text}" if args.echo else r.text)
  print(f"search: {nfe['nfe']} forward passes per prompt (+{nfe['scorer_nfe']} scorer); "
        f"rewards {','.join(rewards.use) or 'none'}", file=sys.stderr)
  return 0


def cmd_eval(args) -> int:
  from mro.evaluation import report
  from mro.evaluation import runner as evaluate
  cfg = evaluate.EvalConfig(
      task=args.task, steps=args.steps or (), protocol=args.protocol, data=args.data,
      split=args.split, limit=args.limit, gen_length=args.gen_length,
      block_length=args.block_length, temperature=args.temperature, remasking=args.remasking,
      threshold=args.threshold, cfg_scale=args.cfg_scale, batch_size=args.batch_size,
      seed=args.seed, data_seed=args.data_seed, out=args.out, scorer=args.scorer,
      **_search_args(args))
  if args.plot and not args.plot.lower().endswith(".png"):
    raise ValueError(f"--plot must name a .png file, got {args.plot}")
  progress = lambda r: print(report.progress_line(r), file=sys.stderr, flush=True)
  records = evaluate.run_eval(args.model, cfg, on_record=progress)
  print(report.format_table(records))
  if args.out:
    print(f"results appended to {args.out}; generations to "
          f"{evaluate.generations_path(args.out)}")
  if args.plot:
    from mro.evaluation import plot
    print(f"plot written to {plot.plot_results(args.out or records, args.plot)}")
  return 0


def _add_search_args(p: argparse.ArgumentParser, rewards_default: str | None = "tv,ppl,q"):
  g = p.add_argument_group("MRO test-time search (method.md §5)")
  g.add_argument("--search", choices=("none", "mro", "best-of-n"), default="none",
                 help="mro: expand k candidates every --group-steps steps, score, select; "
                      "best-of-n: k independent samples picked with the same rewards")
  g.add_argument("--k", type=int, default=4, help="candidates per live sequence")
  g.add_argument("--group-steps", type=int, default=None,
                 help="w, steps between search points (default: steps/4)")
  g.add_argument("--select", choices=("argmax", "resample"), default="argmax",
                 help="argmax (the paper) or importance resampling ∝ exp(R/τ)")
  g.add_argument("--search-temperature", type=float, default=0.25,
                 help="sampling temperature of the candidates")
  g.add_argument("--resample-temperature", type=float, default=1.0)
  g.add_argument("--n-live", type=int, default=1, help="live sequences per prompt")
  g.add_argument("--rewards", default=rewards_default,
                 help="any of tv, ppl, q joined by , or +, each optionally weighted as "
                      "name=weight (e.g. tv,ppl=0.5,q; weights default 1.0); 'all'; 'none' (default: "
                      + (rewards_default or "tv, + ppl with --scorer, + q with --task") + ")")
  g.add_argument("--quality-source", choices=("vote", "verifier", "label"), default="vote")
  g.add_argument("--n-verify", type=int, default=1, help="positions re-predicted per group")
  g.add_argument("--forward-chunks", type=int, default=None,
                 help="run the candidates' forward passes in this many slices (default: "
                      "k x n-live on CPU, where narrower batches are faster per row; 1 on "
                      "accelerators)")
  g.add_argument("--scorer", default=None,
                 help="causal scorer for ppl: a model dir, or 'default' (shipped, per task)")


def _search_args(args) -> dict:
  return {"search": args.search, "k": args.k, "group_steps": args.group_steps,
          "select": args.select, "search_temperature": args.search_temperature,
          "resample_temperature": args.resample_temperature, "n_live": args.n_live,
          "rewards": args.rewards, "quality_source": args.quality_source,
          "n_verify": args.n_verify, "forward_chunks": args.forward_chunks}


def cmd_plot(args) -> int:
  from pathlib import Path
  from mro.evaluation import plot
  out = args.out or str(Path(args.results).with_suffix(".png"))
  print(f"plot written to {plot.plot_results(args.results, out)}")
  return 0


EVAL_HELP = """Steps: a comma-separated list; each value is an integer or a fraction of the response
length: L (= gen-length, one token per step; also "full"), L/2, L/4, ... Each must
divide as the sampler requires (see below). Without --steps: the protocol's steps.

Protocols fill in the style and sampler defaults per task; explicit options override
them and the results record the resolved values:
{protocols}

{steps_help}"""


def _add_eval_parser(verbs) -> None:
  from mro.evaluation import protocols
  p = verbs.add_parser(
      "eval", help="benchmark accuracy at several step counts",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=EVAL_HELP.format(protocols=protocols.describe(), steps_help=STEPS_HELP.replace(
          "Defaults: steps = gen-length; block-length = 32, or gen-length when 32 does not\n"
          "  divide it.", "Defaults (eval): the protocol's, listed above.")))
  p.add_argument("--model", default="default",
                 help="a workdir or HF-format model dir; `default` (or `default-mro`) = the "
                      "shipped model for the task, experiments/models/<name>/<task>/")
  p.add_argument("--task", required=True, help="sudoku, countdown, arith, gsm8k, math500")
  p.add_argument("--data", default=None, help="data file or directory (default: the task's)")
  p.add_argument("--split", default="test")
  p.add_argument("--limit", type=int, default=None, help="first N examples")
  p.add_argument("--steps", default=None, help="e.g. 2,4,8,16 or L,L/2,L/4")
  p.add_argument("--protocol", default="compact", help="compact, llada, d1 or mro")
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--seed", type=int, default=0, help="sampling seed")
  p.add_argument("--data-seed", type=int, default=0, help="seed of generated test sets")
  p.add_argument("--out", default=None,
                 help="append one JSON line per setting here (and every response to "
                      "<stem>.generations.jsonl)")
  p.add_argument("--plot", default=None, help="also draw accuracy vs steps into this PNG")
  g = p.add_argument_group("sampler (default: the protocol's)")
  g.add_argument("--gen-length", type=int, default=None, help="response length in tokens")
  g.add_argument("--block-length", type=int, default=None, help="semi-autoregressive block")
  g.add_argument("--temperature", type=float, default=None, help="0 = greedy (argmax)")
  g.add_argument("--remasking", choices=schedule.REMASKING, default=None)
  g.add_argument("--threshold", type=float, default=None,
                 help="confidence-threshold parallel decoding (0 < T <= 1)")
  g.add_argument("--cfg-scale", type=float, default=0.0, help="classifier-free guidance")
  _add_search_args(p)
  p.set_defaults(func=cmd_eval)

  p = verbs.add_parser("plot", help="draw accuracy vs steps from `mro eval` results")
  p.add_argument("results", help="a results JSONL file written by `mro eval --out`")
  p.add_argument("--out", default=None, help="PNG path (default: the results path, .png)")
  p.set_defaults(func=cmd_plot)


# --- real-scale verbs: convert (HF <-> Orbax), plan (AOT memory/FLOPs) -----------------


def cmd_convert(args) -> int:
  from models import convert
  mesh = None
  if args.mesh:
    from models.sharding import make_mesh, parse_mesh
    mesh = make_mesh(parse_mesh(args.mesh))
  out = convert.convert(args.src, args.dst, to=args.to,
                        max_shard_bytes=convert.parse_size(args.max_shard_size), mesh=mesh,
                        dtype=args.dtype)
  print(f"wrote {convert.detect_format(out)} model to {out}")
  return 0


def cmd_plan(args) -> int:
  import json
  from models.sharding import parse_mesh
  from mro import plan
  cfg = plan.PlanConfig(
      preset=args.preset, mesh=parse_mesh(args.mesh), batch=args.batch, seq=args.seq,
      prompt_len=args.prompt_len, grad_accum=args.grad_accum, remat=not args.no_remat,
      loss_chunk=args.loss_chunk, sample_batch=args.sample_batch,
      sample_prompt=args.sample_prompt, gen_length=args.gen_length,
      block_length=args.block_length, steps=args.steps, train=not args.sample_only,
      sample=not args.train_only)
  try:
    report = plan.plan(cfg)
  except RuntimeError as e:
    raise ValueError(str(e)) from e
  print(plan.format_report(report))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=2)
  return 0


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
  p.add_argument("--preset", default="llada_8b", help="model preset (tiny, small, llada_8b)")
  p.add_argument("--mesh", default="data=1", help="e.g. data=8,fsdp=4,tensor=2")
  p.add_argument("--batch", type=int, default=8, help="training sequences per step (global)")
  p.add_argument("--seq", type=int, default=2048, help="training sequence length")
  p.add_argument("--prompt-len", type=int, default=0,
                 help="SFT prompt columns (0 = pretraining: loss on every position)")
  p.add_argument("--grad-accum", type=int, default=1)
  p.add_argument("--no-remat", action="store_true", help="plan without per-layer remat")
  p.add_argument("--loss-chunk", type=int, default=0,
                 help="data.loss_chunk: output layer on masked chunks only (0 = off)")
  p.add_argument("--sample-batch", type=int, default=0, help="sampler batch (0 = --batch)")
  p.add_argument("--sample-prompt", type=int, default=256, help="sampler prompt length")
  p.add_argument("--gen-length", type=int, default=256)
  p.add_argument("--block-length", type=int, default=32)
  p.add_argument("--steps", type=int, default=0, help="denoising steps (0 = gen-length)")
  only = p.add_mutually_exclusive_group()
  only.add_argument("--train-only", action="store_true")
  only.add_argument("--sample-only", action="store_true")
  p.add_argument("--json", default=None, help="also write the full report here")
  p.set_defaults(func=cmd_plan)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="mro", description=(
      "Masked diffusion LMs in JAX: train, sample, evaluate, MRO search and training."))
  verbs = parser.add_subparsers(dest="verb", required=True)

  p = verbs.add_parser("train", help="train a model (resumes if the workdir has checkpoints)")
  p.add_argument("--config", required=True,
                 help="a shipped config name (experiments/configs/NAME.yaml) or a YAML path")
  p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                 help="override a config field, e.g. --set train.steps=500 (repeatable)")
  p.add_argument("--workdir", required=True)
  p.set_defaults(func=cmd_train)

  for verb, func, text in (
      ("reject-sample", cmd_reject, "MRO reject sampling: search, keep high-reward "
       "trajectories, fine-tune on them (config sections data, sampler, train, mro)"),
      ("rl", cmd_rl, "MRO-RL: REINFORCE over SGRO groups with importance sampling "
       "(config sections data, sampler, train, mro)")):
    p = verbs.add_parser(verb, help=text)
    p.add_argument("--config", required=True, help="a shipped config name or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--workdir", required=True)
    p.set_defaults(func=func)

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

  p = verbs.add_parser("sample", help="generate text from a model",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=STEPS_HELP)
  p.add_argument("--model", required=True, help="a workdir or a HF-format model directory")
  p.add_argument("--prompt", action="append", required=True,
                 help="prompt text (repeat for a batch; prompts may differ in length)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--echo", action="store_true", help="print the prompt before the output")
  p.add_argument("--task", default=None,
                 help="task of the prompts (for the quality reward of --search)")
  _add_sampler_args(p)
  _add_search_args(p, rewards_default=None)
  p.set_defaults(func=cmd_sample)
  _add_eval_parser(verbs)
  _add_real_scale_parsers(verbs)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.func(args)
  except (ValueError, OSError) as e:
    print(f"mro {args.verb}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
