"""Training sequences from task examples, and a deterministic, resumable batch stream.

Layout of every sequence: [pad... prompt | response EOS EOS ...], the prompt left-padded
to `max_prompt_len` (the pads are masked out of attention), the response followed by EOS
up to `max_response_len`. The response window therefore starts at a fixed column, which
lets the SFT loss skip the output layer on prompt positions.

The stream visits sequence `g` (g = 0, 1, 2, ...) as item `g % N` of epoch `g // N`'s
permutation (seeded by data.seed and the epoch), so the data position is one integer and
a resumed run sees exactly the batches the uninterrupted run would have seen. With several
processes each builds only its rows of every batch: the same global batches for any
number of processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from mro.messages import quoted
from mro.training.settings import DataConfig


@dataclasses.dataclass(frozen=True)
class Sequences:
  tokens: np.ndarray  # int32[N, L]
  attn_mask: np.ndarray  # bool[N, L]
  eligible: np.ndarray  # bool[N, L]: positions the objective may mask

  def __len__(self) -> int:
    return self.tokens.shape[0]


def build_sequences(examples: Sequence, tokenizer, cfg: DataConfig) -> Sequences:
  """Tokenises (prompt, target) pairs into the fixed layout; refuses what does not fit."""
  if not examples:
    raise ValueError(f"no training examples for task {quoted(cfg.task)}"
                     + (f" in {cfg.path}" if cfg.path else ""))
  P, R = cfg.max_prompt_len, cfg.max_response_len
  ids = tokenizer.special
  n = len(examples)
  tokens = np.full((n, P + R), ids.pad, np.int32)
  attn = np.zeros((n, P + R), bool)
  eligible = np.zeros((n, P + R), bool)
  for i, ex in enumerate(examples):
    if not ex.target:
      raise ValueError(f"example {quoted(ex.id)} has an empty target; it cannot be trained on")
    prompt = tokenizer.encode(ex.prompt)
    response = tokenizer.encode(ex.target) + [ids.eos]
    if not prompt:
      raise ValueError(f"example {quoted(ex.id)} has an empty prompt")
    if len(prompt) > P or len(response) > R:
      raise ValueError(
          f"example {quoted(ex.id)} has {len(prompt)} prompt and {len(response)} response tokens "
          f"(with EOS); data.max_prompt_len={P} and data.max_response_len={R} must fit them")
    tokens[i, P - len(prompt):P] = prompt
    tokens[i, P:P + len(response)] = response
    tokens[i, P + len(response):] = ids.eos
    attn[i, P - len(prompt):] = True
    real_end = P + (R if cfg.train_on_padding_eos else len(response))
    if cfg.objective == "pretrain":
      eligible[i, P - len(prompt):real_end] = True
    else:
      eligible[i, P:real_end] = True
  return Sequences(tokens, attn, eligible)


class BatchStream:
  """Batches by data position (number of sequences consumed so far).

  `data` is a `Sequences` or any dict of arrays with the same first dimension (e.g. stored
  trajectories); a batch holds the same keys.
  """

  def __init__(self, data: Sequences | dict[str, np.ndarray], batch_size: int, seed: int):
    arrays = dict(vars(data)) if isinstance(data, Sequences) else dict(data)
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
      raise ValueError(f"arrays of a batch stream differ in length: {sorted(sizes)}")
    if sizes == {0}:
      raise ValueError("the training set is empty")
    self.arrays, self.n = arrays, sizes.pop()
    self.batch_size, self.seed = batch_size, seed
    self._perm_epoch, self._perm = -1, None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._perm_epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._perm, self._perm_epoch = rng.permutation(self.n), epoch
    return self._perm

  def indices(self, position: int) -> np.ndarray:
    n = self.n
    out = np.empty(self.batch_size, np.int64)
    for j, g in enumerate(range(position, position + self.batch_size)):
      out[j] = self._permutation(g // n)[g % n]
    return out

  def batch(self, position: int, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The batch at `position`; `rows`: only these rows of it (a process's share,
    `models.sharding.process_rows`), built without the others."""
    idx = self.indices(position)
    if rows is not None:
      idx = idx[rows]
    return {k: v[idx] for k, v in self.arrays.items()}
