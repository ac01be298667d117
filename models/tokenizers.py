"""Tokenizers: one protocol; sentencepiece (wrapper, trainer); Hugging Face `tokenizer.json`.

Special ids (mask, eos, pad, bos; end-of-turn where present) are always read from the
tokenizer's own files, never written as numbers. A model directory holds either
`tokenizer.model` (sentencepiece) or `tokenizer.json` (HF `tokenizers`; preferred when
both exist), plus an optional `tokenizer_config.json` naming the special tokens.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import sentencepiece as spm
import tokenizers as hf

from models.config import SpecialIds
from mro.messages import quoted, shortened

try:  # Optional: LLaDA's own templates also render natively (`render_llada_chat`).
  from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
  ImmutableSandboxedEnvironment = None

SP_FILE, HF_FILE = "tokenizer.model", "tokenizer.json"
CONFIG_FILE, SPECIAL_MAP_FILE, MODEL_CONFIG_FILE = (
    "tokenizer_config.json", "special_tokens_map.json", "config.json")
MASK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|mdm_mask|>", "<|startoftext|>", "<|endoftext|>"
PAD_TOKEN, UNK_TOKEN, EOT_TOKEN = "<|pad|>", "<unk>", "<|eot_id|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
LLADA_SPECIAL_TOKENS = types.MappingProxyType(  # LLaDA pads with its eos
    {"mask": MASK_TOKEN, "bos": BOS_TOKEN, "eos": EOS_TOKEN, "pad": EOS_TOKEN, "eot": EOT_TOKEN})
ROLES = ("mask", "eos", "pad", "bos", "eot")

# Ours: LLaDA-Instruct's format, honouring `add_generation_prompt`.
LLADA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# As shipped with LLaDA-8B-Instruct: it appends the assistant header unconditionally.
LLADA_HUB_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}")
_NATIVE_TEMPLATES = {LLADA_CHAT_TEMPLATE: False, LLADA_HUB_CHAT_TEMPLATE: True}


class Tokenizer(Protocol):
  special: SpecialIds
  vocab_size: int
  eot: int | None  # end-of-turn id, when the tokenizer has one

  def encode(self, text: str) -> list[int]: ...  # adds no special tokens
  def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str: ...
  def token_id(self, token: str) -> int: ...  # ValueError unless `token` is one token
  def save(self, directory: str | Path) -> None: ...


def load_tokenizer(directory: str | Path) -> Tokenizer:
  """Reads the tokenizer in a model directory, choosing the format from its files."""
  d = Path(directory)
  if (d / HF_FILE).is_file():
    return HFTokenizer.load(d)
  if (d / SP_FILE).is_file():
    return SentencePieceTokenizer.load(d)
  raise ValueError(f"{d} holds no tokenizer: expected {SP_FILE} (sentencepiece) "
                   f"or {HF_FILE} (Hugging Face tokenizers)")


def truncate_at_eos(ids: Iterable[int], eos_id: int) -> list[int]:
  """The ids before the first `eos_id` (all of them if there is none)."""
  ids = [int(i) for i in ids]
  return ids[:ids.index(eos_id)] if eos_id in ids else ids


def _role_ids(special: SpecialIds, eot: int | None) -> frozenset[int]:
  return frozenset(i for i in (*special.to_dict().values(), eot) if i is not None)


def _read_json(path: Path) -> dict[str, Any]:
  if not path.is_file():
    return {}
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e


# --- sentencepiece ------------------------------------------------------------------


class SentencePieceTokenizer:
  """A sentencepiece model. MASK is a user-defined piece; bos/eos/pad are the model's ids."""

  def __init__(self, model_proto: bytes, mask_token: str = MASK_TOKEN):
    self._proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size: int = self._sp.get_piece_size()
    if (eos := self._sp.eos_id()) < 0:
      raise ValueError("sentencepiece model has no eos piece (eos_id=-1)")
    pad = self._sp.pad_id() if self._sp.pad_id() >= 0 else eos
    bos = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
    self.special = SpecialIds(mask=self.token_id(mask_token), eos=eos, pad=pad, bos=bos)
    self.eot: int | None = self._find(EOT_TOKEN)
    self._roles = _role_ids(self.special, self.eot)

  @classmethod
  def load(cls, directory: str | Path) -> SentencePieceTokenizer:
    d = Path(directory)
    if not (d / SP_FILE).is_file():
      raise ValueError(f"{d / SP_FILE} does not exist")
    mask = _read_json(d / CONFIG_FILE).get("mask_token", MASK_TOKEN)
    try:
      return cls((d / SP_FILE).read_bytes(), mask_token=mask)
    except RuntimeError as e:  # sentencepiece's parse error names no file
      raise ValueError(f"{d / SP_FILE} is not a sentencepiece model (damaged or another "
                       f"format): {shortened(' '.join(str(e).split()), 200)}") from None
    except ValueError as e:
      raise ValueError(f"{d / SP_FILE}: {e}") from None

  def _find(self, token: str) -> int | None:
    i = self._sp.piece_to_id(token)
    return i if self._sp.id_to_piece(i) == token else None

  def token_id(self, token: str) -> int:
    i = self._find(token)
    if i is None:
      raise ValueError(f"{quoted(token)} is not a piece of this sentencepiece model")
    return i

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
    ids = [int(i) for i in ids]
    if skip_special:
      return self._sp.decode([i for i in ids if i not in self._roles])
    # sentencepiece renders control pieces (bos/eos/pad) as ""; show their names instead.
    pieces = self._sp.decode(ids, return_type="proto").pieces
    return "".join(p.piece if p.id in self._roles else p.surface for p in pieces)

  def save(self, directory: str | Path) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / SP_FILE).write_bytes(self._proto)
    names = {f"{r}_token": self._sp.id_to_piece(i)
             for r, i in self.special.to_dict().items() if i is not None}
    config = {"tokenizer_class": "sentencepiece", **names,
              "unk_token": self._sp.id_to_piece(self._sp.unk_id())}
    (d / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


_RESERVED = ("unk", "bos", "eos", "pad")  # sentencepiece ids in this order, then MASK
_MANAGED = {"sentence_iterator", "model_writer", "user_defined_symbols", "vocab_size",
            "model_type", "minloglevel", *(f"{r}_{k}" for r in _RESERVED for k in ("id", "piece"))}


def train_sentencepiece(texts: Iterable[str], directory: str | Path, vocab_size: int, *,
                        model_type: str = "bpe", user_symbols: Sequence[str] = (),
                        byte_fallback: bool = True, hard_vocab_limit: bool = True,
                        verbose: bool = False, **options: Any) -> SentencePieceTokenizer:
  """Trains a sentencepiece model on in-memory texts; saves it to `directory`.

  Deterministic for the same corpus and settings. Every digit is its own token; the
  normalizer is the identity and no dummy prefix is added, so decode(encode(t)) == t and
  encodings of adjacent pieces of text concatenate. `user_symbols` (e.g. "<answer>") are
  single tokens. With `byte_fallback` unseen characters become byte pieces (needs 256 ids).
  With `hard_vocab_limit=False` a too-small corpus gives a smaller vocabulary than asked
  instead of an error. `options` go to sentencepiece's trainer.
  """
  if clash := sorted(set(options) & _MANAGED):
    raise ValueError(f"train_sentencepiece manages option(s) {clash}; do not pass them")
  symbols = [MASK_TOKEN, *user_symbols]
  named = {BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN}
  if bad := [s for s in user_symbols if not s or s in named or symbols.count(s) > 1]:
    raise ValueError(f"user_symbols {bad} are empty, repeated or clash with special tokens")
  opts: dict[str, Any] = dict(
      split_digits=True, character_coverage=1.0, normalization_rule_name="identity",
      remove_extra_whitespaces=False, add_dummy_prefix=False, max_sentence_length=1 << 16,
      byte_fallback=byte_fallback, hard_vocab_limit=hard_vocab_limit)
  opts.update(options)
  it = _checked_texts(texts, opts["max_sentence_length"])
  if (first := next(it, None)) is None:
    raise ValueError("train_sentencepiece: the corpus is empty")
  opts.update({f"{r}_id": i for i, r in enumerate(_RESERVED)})
  opts.update(unk_piece=UNK_TOKEN, bos_piece=BOS_TOKEN, eos_piece=EOS_TOKEN, pad_piece=PAD_TOKEN)
  writer = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=itertools.chain([first], it), model_writer=writer,
        vocab_size=vocab_size, model_type=model_type, user_defined_symbols=symbols,
        minloglevel=0 if verbose else 2, **opts)
  except RuntimeError as e:
    raise _vocab_error(str(e), vocab_size) from e
  tok = SentencePieceTokenizer(writer.getvalue())
  tok.save(directory)
  return tok


def _checked_texts(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
  """Yields the texts; raises on any that sentencepiece would silently skip."""
  for n, text in enumerate(texts):
    if not isinstance(text, str):
      raise ValueError(f"text {n} is a {type(text).__name__}, not a str")
    if len(text.encode()) > max_bytes:
      raise ValueError(f"text {n} is longer than max_sentence_length={max_bytes} bytes "
                       "(sentencepiece would skip it); split it or raise the limit")
    yield text


def _vocab_error(message: str, vocab_size: int) -> ValueError:
  if m := re.search(r"Vocabulary size too high .*<= (\d+)", message):
    return ValueError(
        f"vocab_size={vocab_size} is too large for this corpus: sentencepiece can make at most"
        f" {m[1]} pieces from it. Use vocab_size <= {m[1]}, a larger corpus, or"
        " hard_vocab_limit=False to accept a smaller vocabulary.")
  if m := re.search(r"smaller than required_chars\. \d+ vs (\d+)", message):
    return ValueError(f"vocab_size={vocab_size} is too small: the special pieces, every character"
                      f" of the corpus and (with byte_fallback) 256 byte pieces need {m[1]} ids.")
  return ValueError(f"sentencepiece training failed: {message}")


# --- Hugging Face tokenizer.json ------------------------------------------------------


class HFTokenizer:
  """A Hugging Face `tokenizer.json`; special tokens from the JSON files beside it."""

  def __init__(self, tokenizer: hf.Tokenizer, special: SpecialIds, *, eot: int | None = None,
               chat_template: str | None = None, config: Mapping[str, Any] | None = None):
    self._tok = tokenizer
    self.special, self.eot, self.chat_template = special, eot, chat_template
    self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
    self._config = dict(config or {})
    self._roles = _role_ids(special, eot)

  @classmethod
  def load(cls, directory: str | Path) -> HFTokenizer:
    """Ids from token names in tokenizer_config.json, then special_tokens_map.json, then the
    ids in config.json; MASK and end-of-turn fall back to LLaDA's token names; pad to eos."""
    d = Path(directory)
    if not (d / HF_FILE).is_file():
      raise ValueError(f"{d / HF_FILE} does not exist")
    try:
      tok = hf.Tokenizer.from_file(str(d / HF_FILE))
    except Exception as e:  # tokenizers raises its own Exception type, naming no file
      raise ValueError(f"{d / HF_FILE} is not a Hugging Face tokenizer file (damaged or "
                       f"another format): {shortened(' '.join(str(e).split()), 200)}") from None
    config = _read_json(d / CONFIG_FILE)
    ids = _hf_role_ids(tok, d, config)
    if missing := [r for r in ("mask", "eos") if r not in ids]:
      raise ValueError(f"{d}: no {missing} token named in {CONFIG_FILE}, {SPECIAL_MAP_FILE} "
                       f"or {MODEL_CONFIG_FILE}")
    ids.setdefault("pad", ids["eos"])
    eot = ids.pop("eot", None)
    return cls(tok, SpecialIds(**ids), eot=eot, chat_template=config.get("chat_template"),
               config=config)

  def _role_names(self) -> dict[str, str]:
    roles = {**self.special.to_dict(), "eot": self.eot}
    return {f"{r}_token": self._tok.id_to_token(i) for r, i in roles.items() if i is not None}

  def token_id(self, token: str) -> int:
    i = self._tok.token_to_id(token)
    if i is None:
      raise ValueError(f"{quoted(token)} is not a token of this tokenizer")
    return i

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
    ids = [int(i) for i in ids]
    if skip_special:
      ids = [i for i in ids if i not in self._roles]
    return self._tok.decode(ids, skip_special_tokens=False)

  def save(self, directory: str | Path) -> None:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    self._tok.save(str(d / HF_FILE))
    config = {**self._config, **self._role_names()}
    if self.chat_template is not None:
      config["chat_template"] = self.chat_template
    (d / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

  def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Renders `chat_template` (jinja2, sandboxed; LLaDA's templates also without jinja2)."""
    if self.chat_template is None:
      raise ValueError(f"this tokenizer has no chat_template (looked in {CONFIG_FILE})")
    for m in messages:
      if not (isinstance(m, dict) and isinstance(m.get("role"), str)
              and isinstance(m.get("content"), str)):
        raise ValueError(f"each message needs str 'role' and 'content', got {quoted(m)}")
    tokens = {"bos_token": "", **self._role_names()}
    if ImmutableSandboxedEnvironment is not None:
      env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                          extensions=["jinja2.ext.loopcontrols"])
      env.globals["raise_exception"] = _raise_template_error
      return env.from_string(self.chat_template).render(
          messages=messages, add_generation_prompt=add_generation_prompt, **tokens)
    if self.chat_template in _NATIVE_TEMPLATES:
      always = _NATIVE_TEMPLATES[self.chat_template]
      return render_llada_chat(messages, bos_token=tokens["bos_token"],
                               add_generation_prompt=add_generation_prompt or always)
    raise ValueError("this chat_template is not LLaDA's and jinja2 is not installed; "
                     "install jinja2 to render it")


def _raise_template_error(message: str):
  raise ValueError(f"chat_template: {message}")


def render_llada_chat(messages: Sequence[Mapping[str, str]], *, bos_token: str,
                      add_generation_prompt: bool) -> str:
  """LLaDA-Instruct's chat format, without jinja2 (content is stripped, as `| trim` does)."""
  turns = "".join(f"{HEADER_START}{m['role']}{HEADER_END}\n\n{m['content'].strip()}{EOT_TOKEN}"
                  for m in messages)
  prompt = f"{HEADER_START}assistant{HEADER_END}\n\n" if add_generation_prompt else ""
  return (bos_token if messages else "") + turns + prompt


def _token_name(value: Any) -> str | None:
  return value.get("content") if isinstance(value, dict) else value


def _hf_role_ids(tok: hf.Tokenizer, d: Path, config: Mapping[str, Any]) -> dict[str, int]:
  ids: dict[str, int] = {}
  for fname, data in ((CONFIG_FILE, config), (SPECIAL_MAP_FILE, _read_json(d / SPECIAL_MAP_FILE))):
    for role in ROLES:
      name = _token_name(data.get(f"{role}_token"))
      if role in ids or not name:
        continue
      if tok.token_to_id(name) is None:
        raise ValueError(f"{d / fname}: {role}_token {quoted(name)} is not in {d / HF_FILE}")
      ids[role] = tok.token_to_id(name)
  model = _read_json(d / MODEL_CONFIG_FILE)
  vocab = tok.get_vocab_size(with_added_tokens=True)
  for role in ROLES:
    value = model.get(f"{role}_token_id")
    value = value[0] if isinstance(value, list) and value else value
    if role in ids or not isinstance(value, int):
      continue
    if not 0 <= value < vocab:
      raise ValueError(f"{d / MODEL_CONFIG_FILE}: {role}_token_id={value} is outside the "
                       f"tokenizer's {vocab} ids")
    ids[role] = value
  for role, name in (("mask", MASK_TOKEN), ("eot", EOT_TOKEN)):
    if role not in ids and tok.token_to_id(name) is not None:
      ids[role] = tok.token_to_id(name)
  return ids


def build_hf_tokenizer(directory: str | Path, texts: Iterable[str], vocab_size: int,
                       special_tokens: Mapping[str, str] = LLADA_SPECIAL_TOKENS,
                       chat_template: str | None = None, *,
                       extra_tokens: Sequence[str] = (HEADER_START, HEADER_END)) -> HFTokenizer:
  """Trains a small byte-level BPE `tokenizer.json` (digits split) and writes it with a
  `tokenizer_config.json` into `directory`; for tests and toy models, never downloads.

  `special_tokens` maps roles (mask, eos, pad, bos, eot) to token strings; `extra_tokens`
  are further single tokens (chat headers, task tags).
  """
  if set(special_tokens) - set(ROLES) or not {"mask", "eos"} <= set(special_tokens):
    raise ValueError(f"special_tokens needs 'mask' and 'eos' among roles {ROLES}; "
                     f"got {sorted(special_tokens)}")
  added = list(dict.fromkeys([*special_tokens.values(), *extra_tokens]))
  tok = hf.Tokenizer(hf.models.BPE())
  tok.pre_tokenizer = hf.pre_tokenizers.Sequence([
      hf.pre_tokenizers.Digits(individual_digits=True),
      hf.pre_tokenizers.ByteLevel(add_prefix_space=False)])
  tok.decoder = hf.decoders.ByteLevel()
  trainer = hf.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=added, show_progress=False,
      initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer=trainer)
  d = Path(directory)
  d.mkdir(parents=True, exist_ok=True)
  tok.save(str(d / HF_FILE))
  config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast",
                            **{f"{r}_token": t for r, t in special_tokens.items()}}
  if chat_template is not None:
    config["chat_template"] = chat_template
  (d / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
  return HFTokenizer.load(d)
