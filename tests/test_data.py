"""Training sequences (fixed layout) and the resumable batch stream."""

import dataclasses

import numpy as np
import pytest

from models.config import SpecialIds
from mro.training.settings import DataConfig
from mro.training.data import BatchStream, Sequences, build_sequences
from rewards.tasks import Example

PAD, EOS, MASK = 0, 1, 2


class CharTokenizer:
  """One id per character (ids >= 3); pad/eos/mask are distinct ids."""

  special = SpecialIds(mask=MASK, eos=EOS, pad=PAD)

  def encode(self, text):
    return [3 + ord(c) for c in text]


def ex(id_, prompt, target):
  return Example(id_, prompt, target, "")


EXAMPLES = [ex("a", "12+3=", "15"), ex("b", "1=", "abcdefg"), ex("c", "123456", "z")]
P, R = 6, 8


def build(examples=EXAMPLES, **overrides):
  cfg = DataConfig(max_prompt_len=P, max_response_len=R, **overrides)
  return build_sequences(examples, CharTokenizer(), cfg)


def test_prompt_is_left_padded_to_end_at_max_prompt_len_and_response_follows_with_eos():
  seqs = build()
  tok = CharTokenizer()
  assert seqs.tokens.shape == (3, P + R) and seqs.tokens.dtype == np.int32
  for row, e in zip(seqs.tokens, EXAMPLES):
    prompt, resp = tok.encode(e.prompt), tok.encode(e.target)
    np.testing.assert_array_equal(row[:P - len(prompt)], PAD)
    np.testing.assert_array_equal(row[P - len(prompt):P], prompt)
    np.testing.assert_array_equal(row[P:P + len(resp)], resp)
    np.testing.assert_array_equal(row[P + len(resp):], EOS)  # EOS, then EOS padding


def test_attention_mask_is_false_exactly_on_the_left_padding():
  seqs = build()
  for row, e in zip(seqs.attn_mask, EXAMPLES):
    want = np.arange(P + R) >= P - len(e.prompt)
    np.testing.assert_array_equal(row, want)


def test_sft_eligible_is_the_whole_response_window_with_eos_padding():
  seqs = build(train_on_padding_eos=True)
  want = np.zeros((P + R), bool)
  want[P:] = True
  np.testing.assert_array_equal(seqs.eligible, np.broadcast_to(want, seqs.eligible.shape))


def test_without_padding_eos_only_the_response_and_its_first_eos_are_eligible():
  seqs = build(train_on_padding_eos=False)
  for row, e in zip(seqs.eligible, EXAMPLES):
    end = P + len(e.target) + 1  # the target and one EOS
    np.testing.assert_array_equal(row, (np.arange(P + R) >= P) & (np.arange(P + R) < end))
  # the tokens themselves do not change with the option
  np.testing.assert_array_equal(seqs.tokens, build(train_on_padding_eos=True).tokens)


def test_pretraining_makes_every_non_pad_position_eligible():
  seqs = build(objective="pretrain")
  np.testing.assert_array_equal(seqs.eligible, seqs.attn_mask)


def test_an_example_that_does_not_fit_names_its_id_and_lengths():
  long_prompt = [ex("ok", "1=", "2"), ex("too-long-prompt", "1234567", "2")]
  with pytest.raises(ValueError, match=r"'too-long-prompt' has 7 prompt and 2 response"):
    build(long_prompt)
  with pytest.raises(ValueError, match=r"'too-long-response' has 2 prompt and 9 response.*"
                                       r"max_response_len=8"):
    build([ex("too-long-response", "1=", "12345678")])  # 8 chars + EOS = 9


def test_a_response_that_fills_the_window_exactly_fits():
  seqs = build([ex("full", "123456", "1234567")])  # 6 prompt, 7 + EOS = 8 response
  assert seqs.attn_mask.all() and seqs.tokens[0, -1] == EOS


@pytest.mark.parametrize("examples, match", [
    ([], "no training examples"),
    ([ex("e1", "1=", "")], "'e1' has an empty target"),
    ([ex("e2", "", "5")], "'e2' has an empty prompt"),
])
def test_empty_inputs_are_refused(examples, match):
  with pytest.raises(ValueError, match=match):
    build(examples)


# --- BatchStream ----------------------------------------------------------------------


def numbered(n: int) -> Sequences:
  """Row i holds the value i, so a batch shows which rows it contains."""
  tokens = np.repeat(np.arange(n, dtype=np.int32)[:, None], 4, 1)
  return Sequences(tokens, np.ones_like(tokens, bool), np.ones_like(tokens, bool))


def test_the_stream_is_deterministic_for_a_seed_and_differs_between_seeds():
  data = numbered(13)
  a, b, c = BatchStream(data, 5, seed=1), BatchStream(data, 5, seed=1), BatchStream(data, 5, 2)
  seq = lambda s: np.concatenate([s.indices(p) for p in range(0, 60, 5)])
  np.testing.assert_array_equal(seq(a), seq(b))
  assert not np.array_equal(seq(a), seq(c))


@pytest.mark.parametrize("n, batch", [(13, 5), (10, 10), (4, 7)])
def test_each_epoch_visits_every_sequence_exactly_once(n, batch):
  stream = BatchStream(numbered(n), batch, seed=0)
  flat = np.concatenate([stream.batch(p)["tokens"][:, 0] for p in range(0, 6 * n, batch)])
  epochs = flat[:len(flat) // n * n].reshape(-1, n)
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
  assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs


def test_a_batch_depends_only_on_its_position():
  """Random-order access (as after a resume) gives the batches of sequential access."""
  data = numbered(11)
  positions = list(range(0, 80, 4))
  sequential = BatchStream(data, 4, seed=3)
  want = {p: sequential.batch(p) for p in positions}
  shuffled = BatchStream(data, 4, seed=3)
  for p in np.random.default_rng(0).permutation(positions):
    got = shuffled.batch(int(p))
    for k in ("tokens", "attn_mask", "eligible"):
      np.testing.assert_array_equal(got[k], want[p][k])
  resumed = BatchStream(data, 4, seed=3)  # a fresh stream started at a later position
  np.testing.assert_array_equal(resumed.batch(44)["tokens"], want[44]["tokens"])


def test_processes_building_their_own_rows_build_the_global_batch_between_them():
  """Each process builds only its rows of a batch (multi-host); together they are the
  batch one process builds, whatever the split."""
  stream = BatchStream(numbered(11), 8, seed=2)
  for position in (0, 8, 40):
    whole = stream.batch(position)["tokens"]
    for shares in ([np.arange(8)], [np.arange(4), np.arange(4, 8)],
                   [np.array([0, 1, 4, 5]), np.array([2, 3, 6, 7])]):
      parts = [BatchStream(numbered(11), 8, seed=2).batch(position, rows)["tokens"]
               for rows in shares]
      np.testing.assert_array_equal(np.concatenate(parts), whole[np.concatenate(shares)])


def test_a_batch_carries_the_rows_of_all_three_arrays():
  seqs = build()
  stream = BatchStream(seqs, 2, seed=0)
  batch = stream.batch(1)
  idx = stream.indices(1)
  np.testing.assert_array_equal(batch["tokens"], seqs.tokens[idx])
  np.testing.assert_array_equal(batch["attn_mask"], seqs.attn_mask[idx])
  np.testing.assert_array_equal(batch["eligible"], seqs.eligible[idx])


def test_an_empty_training_set_is_refused():
  empty = dataclasses.replace(numbered(1), tokens=np.zeros((0, 4), np.int32),
                              attn_mask=np.zeros((0, 4), bool), eligible=np.zeros((0, 4), bool))
  with pytest.raises(ValueError, match="empty"):
    BatchStream(empty, 2, seed=0)


def test_arrays_of_different_lengths_are_refused():
  with pytest.raises(ValueError, match="differ in length"):
    BatchStream({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, 2, seed=0)
