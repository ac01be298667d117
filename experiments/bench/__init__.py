"""Benchmarks (each module's docstring says what it measures and how to run it)."""

from __future__ import annotations

import argparse


def sampler_shape_parser(description: str, *, prompt_len: int, gen: int, steps,
                         repeats: int) -> argparse.ArgumentParser:
  """The command line of the sampler speed benchmarks: model preset (random weights),
  batch, prompt and response lengths, block, steps and timing repeats."""
  ap = argparse.ArgumentParser(description=description)
  ap.add_argument("--preset", default="small")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--prompt-len", type=int, default=prompt_len)
  ap.add_argument("--gen", type=int, default=gen)
  ap.add_argument("--block", type=int, default=32)
  ap.add_argument("--steps", type=type(steps), default=steps)
  ap.add_argument("--repeats", type=int, default=repeats)
  return ap
