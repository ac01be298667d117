"""Tokenizers: sentencepiece trained in memory; HF tokenizer.json built in tmp_path; chat."""

import json

import pytest
import sentencepiece as spm

from models import tokenizers as tk

TAGS = ("<answer>", "</answer>", "<think>", "</think>")
VOCAB = 512  # the `tiny` model's vocabulary; the corpus below supports up to ~670 pieces
WORDS = "the quick brown fox jumps over a lazy dog while we count sums and think aloud".split()
ROUND_TRIP_TEXTS = [
    "What is 12 + 7? It is 19.",
    "  leading spaces, double  spaces and a trailing one ",
    "tabs\tand\nnew lines",
    "(a, b); c! d? e: f... \"quoted\" 'single' [x] {y} #1 $2 %3 =8 @9",
    "<think>3 plus 4</think><answer>7</answer>",
    "x<answer>-42.5</answer>y",
    "unseen characters: é ü ☃ 漢字",
]


def corpus() -> list[str]:
  lines = [f"Q: what is {a} + {b}? <think>{WORDS[a % len(WORDS)]} {a} plus {b}</think> "
           f"<answer>{a + b}</answer>" for a in range(40) for b in range(3)]
  return lines + [
      "Punctuation: (a, b); c! d? e: f... \"quoted\" 'single' [x] {y} #1 $2 %3 &4 *5 -6 /7 =8"
      " @9 ^0 _ ~ `|\\ <>",
      "Tabs\tand\nnew lines,  double  spaces and   triple   ones.",
      "CAPITALS: ABCDEFGHIJKLMNOPQRSTUVWXYZ",
  ]


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("sp")
  tk.train_sentencepiece(corpus(), d, VOCAB, user_symbols=TAGS)
  return d


@pytest.fixture(scope="module")
def sp(sp_dir) -> tk.SentencePieceTokenizer:
  return tk.SentencePieceTokenizer.load(sp_dir)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("hf")
  tk.build_hf_tokenizer(d, corpus(), VOCAB, tk.LLADA_SPECIAL_TOKENS, tk.LLADA_CHAT_TEMPLATE,
                        extra_tokens=(tk.HEADER_START, tk.HEADER_END, *TAGS))
  return d


@pytest.fixture(scope="module")
def hf_tok(hf_dir) -> tk.HFTokenizer:
  return tk.HFTokenizer.load(hf_dir)


@pytest.fixture(params=["sentencepiece", "hf"])
def any_tok(request, sp, hf_tok):
  return sp if request.param == "sentencepiece" else hf_tok


def added_token_ids(hf_dir) -> dict[str, int]:
  """Token -> id as written in tokenizer.json itself (independent of the wrapper)."""
  data = json.loads((hf_dir / "tokenizer.json").read_text())
  return {t["content"]: t["id"] for t in data["added_tokens"]}


# --- both formats ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_decode_of_encode_gives_back_the_text(any_tok, text):
  assert any_tok.decode(any_tok.encode(text)) == text


def test_every_digit_is_its_own_token(any_tok):
  for digit in "0123456789":
    assert len(any_tok.encode(digit)) == 1
  ids = any_tok.encode("9081726354")
  assert [any_tok.decode([i]) for i in ids] == list("9081726354")


def test_task_tags_are_single_tokens(any_tok):
  for tag in TAGS:
    assert any_tok.encode(tag) == [any_tok.token_id(tag)]
  ids = any_tok.encode("x<answer>7</answer>")
  assert any_tok.token_id("<answer>") in ids and any_tok.token_id("</answer>") in ids


def test_ordinary_text_never_encodes_to_a_special_id(any_tok):
  special = {any_tok.special.mask, any_tok.special.pad, any_tok.special.eos, any_tok.special.bos}
  for text in corpus() + ROUND_TRIP_TEXTS:
    assert not special & set(any_tok.encode(text)), text


def test_decode_with_skip_special_drops_mask_pad_bos_and_eos(any_tok):
  s = any_tok.special
  ids = [s.bos, *any_tok.encode("3 + 4 ="), s.mask, s.mask, *any_tok.encode(" 7"), s.eos, s.pad]
  assert any_tok.decode(ids) == "3 + 4 = 7"
  shown = any_tok.decode(ids, skip_special=False)
  assert shown.startswith(tk.BOS_TOKEN) and f"={tk.MASK_TOKEN}{tk.MASK_TOKEN} 7" in shown
  assert shown.endswith(tk.EOS_TOKEN + any_tok.decode([s.pad], skip_special=False))


def test_decode_accepts_numpy_ids(any_tok):
  np = pytest.importorskip("numpy")
  ids = any_tok.encode("12 + 3")
  assert any_tok.decode(np.asarray(ids, dtype=np.int32)) == "12 + 3"


def test_unknown_token_names_raise_value_error(any_tok):
  with pytest.raises(ValueError, match="not a"):
    any_tok.token_id("<no such token>")


def test_load_tokenizer_picks_the_format_from_the_files(sp_dir, hf_dir):
  assert isinstance(tk.load_tokenizer(sp_dir), tk.SentencePieceTokenizer)
  assert isinstance(tk.load_tokenizer(hf_dir), tk.HFTokenizer)


def test_load_tokenizer_on_an_empty_directory_names_it(tmp_path):
  with pytest.raises(ValueError, match=str(tmp_path)):
    tk.load_tokenizer(tmp_path)


def test_save_then_load_gives_identical_ids_and_encodings(any_tok, tmp_path):
  any_tok.save(tmp_path / "copy")
  loaded = tk.load_tokenizer(tmp_path / "copy")
  assert type(loaded) is type(any_tok)
  assert loaded.special == any_tok.special and loaded.eot == any_tok.eot
  assert loaded.vocab_size == any_tok.vocab_size
  for text in ROUND_TRIP_TEXTS:
    assert loaded.encode(text) == any_tok.encode(text)


def test_truncate_at_eos_keeps_the_ids_before_the_first_eos():
  assert tk.truncate_at_eos([5, 6, 2, 7, 2], eos_id=2) == [5, 6]
  assert tk.truncate_at_eos([2, 5], eos_id=2) == []
  assert tk.truncate_at_eos([5, 6], eos_id=2) == [5, 6]


# --- sentencepiece --------------------------------------------------------------------


def test_sentencepiece_special_ids_are_distinct_and_match_their_pieces(sp, sp_dir):
  model = spm.SentencePieceProcessor(model_file=str(sp_dir / "tokenizer.model"))
  s = sp.special
  assert len({s.mask, s.eos, s.pad, s.bos}) == 4
  assert model.id_to_piece(s.mask) == tk.MASK_TOKEN
  assert model.id_to_piece(s.eos) == tk.EOS_TOKEN
  assert model.id_to_piece(s.pad) == tk.PAD_TOKEN
  assert model.id_to_piece(s.bos) == tk.BOS_TOKEN
  assert sp.vocab_size == model.get_piece_size() == VOCAB


def test_sentencepiece_config_file_names_the_special_tokens(sp_dir):
  config = json.loads((sp_dir / "tokenizer_config.json").read_text())
  assert config["mask_token"] == tk.MASK_TOKEN and config["eos_token"] == tk.EOS_TOKEN
  assert config["pad_token"] == tk.PAD_TOKEN and config["bos_token"] == tk.BOS_TOKEN


def test_training_characters_never_encode_to_unknown_even_without_byte_fallback(tmp_path):
  tok = tk.train_sentencepiece(corpus(), tmp_path, 200, user_symbols=TAGS, byte_fallback=False)
  unk = tok.token_id(tk.UNK_TOKEN)
  for char in sorted(set("".join(corpus()))):
    assert unk not in tok.encode(char), repr(char)
  assert unk in tok.encode("☃")  # an unseen character, with byte_fallback off


def test_training_twice_on_the_same_corpus_gives_identical_models(tmp_path, sp_dir):
  for model_type, vocab in (("bpe", VOCAB), ("unigram", 370)):
    a, b = tmp_path / f"{model_type}_a", tmp_path / f"{model_type}_b"
    tk.train_sentencepiece(corpus(), a, vocab, model_type=model_type, user_symbols=TAGS)
    tk.train_sentencepiece(iter(corpus()), b, vocab, model_type=model_type, user_symbols=TAGS)
    assert (a / "tokenizer.model").read_bytes() == (b / "tokenizer.model").read_bytes()
  fixture_model = (sp_dir / "tokenizer.model").read_bytes()
  assert fixture_model == (tmp_path / "bpe_a" / "tokenizer.model").read_bytes()


def test_training_is_quiet_unless_verbose(tmp_path, capfd):
  tk.train_sentencepiece(corpus(), tmp_path / "quiet", VOCAB)
  assert capfd.readouterr() == ("", "")
  tk.train_sentencepiece(corpus(), tmp_path / "verbose", VOCAB, verbose=True)
  assert "trainer" in capfd.readouterr().err


def test_a_vocab_too_large_for_the_corpus_raises_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"vocab_size=5000 is too large.*hard_vocab_limit=False"):
    tk.train_sentencepiece(corpus(), tmp_path, 5000)


def test_hard_vocab_limit_false_accepts_a_smaller_vocabulary(tmp_path):
  tok = tk.train_sentencepiece(corpus(), tmp_path, 5000, hard_vocab_limit=False)
  assert VOCAB < tok.vocab_size < 5000
  assert tok.decode(tok.encode(ROUND_TRIP_TEXTS[0])) == ROUND_TRIP_TEXTS[0]


def test_a_vocab_too_small_for_the_characters_raises_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match=r"vocab_size=100 is too small.*need \d+ ids"):
    tk.train_sentencepiece(corpus(), tmp_path, 100)


@pytest.mark.parametrize("kwargs, match", [
    (dict(texts=[]), "corpus is empty"),
    (dict(user_symbols=[tk.MASK_TOKEN]), "clash"),
    (dict(user_symbols=["<answer>", "<answer>"]), "repeated"),
    (dict(user_symbols=[tk.EOS_TOKEN]), "clash"),
    (dict(pad_id=-1), "manages"),
    (dict(texts=["short", "x" * 70_000]), r"text 1 is longer than max_sentence_length"),
    (dict(texts=["ok", 5]), "text 1 is a int"),
])
def test_invalid_training_options_raise_value_error(tmp_path, kwargs, match):
  args = dict(texts=corpus(), directory=tmp_path, vocab_size=VOCAB) | kwargs
  with pytest.raises(ValueError, match=match):
    tk.train_sentencepiece(**args)


# --- Hugging Face tokenizer.json ------------------------------------------------------


def test_hf_special_ids_are_read_from_the_tokenizer_files(hf_tok, hf_dir):
  ids = added_token_ids(hf_dir)
  assert hf_tok.special.mask == ids[tk.MASK_TOKEN]
  assert hf_tok.special.bos == ids[tk.BOS_TOKEN]
  assert hf_tok.special.eos == hf_tok.special.pad == ids[tk.EOS_TOKEN]  # LLaDA pads with eos
  assert hf_tok.eot == ids[tk.EOT_TOKEN]
  assert len({hf_tok.special.mask, hf_tok.special.bos, hf_tok.special.eos, hf_tok.eot}) == 4
  model_vocab = json.loads((hf_dir / "tokenizer.json").read_text())["model"]["vocab"]
  assert hf_tok.vocab_size == len(model_vocab) <= VOCAB  # BPE stops when merges run out


def test_hf_llada_style_files_find_mask_and_end_of_turn_by_their_llada_names(hf_dir, tmp_path):
  """LLaDA's tokenizer_config.json names bos/eos/pad only; MASK and <|eot_id|> are found by name."""
  (tmp_path / "tokenizer.json").write_bytes((hf_dir / "tokenizer.json").read_bytes())
  write_tokenizer_config(tmp_path, bos_token=tk.BOS_TOKEN, eos_token=tk.EOS_TOKEN,
                         pad_token=tk.EOS_TOKEN)
  ids = added_token_ids(hf_dir)
  tok = tk.HFTokenizer.load(tmp_path)
  assert tok.special.mask == ids[tk.MASK_TOKEN] and tok.eot == ids[tk.EOT_TOKEN]


def test_hf_encode_adds_no_special_tokens_even_with_a_post_processor(hf_dir, tmp_path):
  import tokenizers

  raw = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
  bos = added_token_ids(hf_dir)[tk.BOS_TOKEN]
  raw.post_processor = tokenizers.processors.TemplateProcessing(
      single=f"{tk.BOS_TOKEN} $A", special_tokens=[(tk.BOS_TOKEN, bos)])
  raw.save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "tokenizer_config.json").write_bytes((hf_dir / "tokenizer_config.json").read_bytes())
  assert raw.encode("hi").ids[0] == bos  # the post-processor is live...
  assert bos not in tk.HFTokenizer.load(tmp_path).encode("hi")  # ...but encode skips it


def write_tokenizer_config(d, **fields):
  (d / "tokenizer_config.json").write_text(json.dumps(fields))


@pytest.fixture
def plain_hf_dir(tmp_path):
  """A tokenizer whose MASK is not named like LLaDA's, so nothing can find it by name."""
  tk.build_hf_tokenizer(tmp_path, corpus(), 300, {"mask": "[MASK]", "eos": "</s>"})
  return tmp_path


def test_hf_mask_id_comes_from_config_json_when_the_tokenizer_files_do_not_name_it(plain_hf_dir):
  ids = added_token_ids(plain_hf_dir)
  write_tokenizer_config(plain_hf_dir, eos_token="</s>")
  (plain_hf_dir / "config.json").write_text(json.dumps({"mask_token_id": ids["[MASK]"]}))
  tok = tk.HFTokenizer.load(plain_hf_dir)
  assert tok.special.mask == ids["[MASK]"] and tok.special.eos == tok.special.pad == ids["</s>"]
  assert tok.special.bos is None and tok.eot is None


def test_hf_eos_comes_from_special_tokens_map_json(plain_hf_dir):
  ids = added_token_ids(plain_hf_dir)
  write_tokenizer_config(plain_hf_dir, mask_token="[MASK]")
  (plain_hf_dir / "special_tokens_map.json").write_text(
      json.dumps({"eos_token": {"content": "</s>", "special": True}}))
  assert tk.HFTokenizer.load(plain_hf_dir).special.eos == ids["</s>"]


def test_hf_without_a_mask_token_raises_naming_the_directory(plain_hf_dir):
  write_tokenizer_config(plain_hf_dir, eos_token="</s>")
  with pytest.raises(ValueError, match=rf"{plain_hf_dir}.*mask"):
    tk.HFTokenizer.load(plain_hf_dir)


def test_hf_named_token_missing_from_the_vocabulary_raises(plain_hf_dir):
  write_tokenizer_config(plain_hf_dir, mask_token="[MASK]", eos_token="<|not_there|>")
  with pytest.raises(ValueError, match=r"tokenizer_config.json: eos_token '<\|not_there\|>'"):
    tk.HFTokenizer.load(plain_hf_dir)


def test_hf_config_json_id_outside_the_vocabulary_raises(plain_hf_dir):
  write_tokenizer_config(plain_hf_dir, eos_token="</s>")
  (plain_hf_dir / "config.json").write_text(json.dumps({"mask_token_id": 10**6}))
  with pytest.raises(ValueError, match="mask_token_id=1000000 is outside"):
    tk.HFTokenizer.load(plain_hf_dir)


# --- chat template --------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "You solve sums."},
            {"role": "user", "content": "What is 2+3?  \n"}]
TURNS = ("<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nYou solve sums.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>")
PROMPT = "<|start_header_id|>assistant<|end_header_id|>\n\n"


@pytest.fixture(params=["jinja2", "native"])
def renderer(request, monkeypatch):
  """Renders with jinja2 when installed, and with the native LLaDA renderer."""
  if request.param == "jinja2":
    pytest.importorskip("jinja2")
  else:
    monkeypatch.setattr(tk, "ImmutableSandboxedEnvironment", None)
  return request.param


def test_chat_template_renders_the_llada_format_exactly(hf_tok, renderer):
  assert hf_tok.apply_chat_template(MESSAGES) == TURNS + PROMPT
  assert hf_tok.apply_chat_template(MESSAGES, add_generation_prompt=False) == TURNS


def test_rendered_chat_encodes_headers_and_end_of_turn_as_single_tokens(hf_tok, renderer):
  ids = hf_tok.encode(hf_tok.apply_chat_template(MESSAGES))
  assert ids[0] == hf_tok.special.bos and ids.count(hf_tok.eot) == 2
  assert ids.count(hf_tok.token_id(tk.HEADER_START)) == 3
  assert hf_tok.decode(ids, skip_special=False) == TURNS + PROMPT


def test_llada_hub_template_always_appends_the_assistant_header(hf_tok, renderer, monkeypatch):
  monkeypatch.setattr(hf_tok, "chat_template", tk.LLADA_HUB_CHAT_TEMPLATE)
  assert hf_tok.apply_chat_template(MESSAGES, add_generation_prompt=False) == TURNS + PROMPT


def test_chat_template_survives_save_and_load(hf_tok, tmp_path, renderer, monkeypatch):
  hf_tok.save(tmp_path / "ours")
  assert tk.HFTokenizer.load(tmp_path / "ours").apply_chat_template(MESSAGES) == TURNS + PROMPT
  monkeypatch.setattr(hf_tok, "chat_template", tk.LLADA_HUB_CHAT_TEMPLATE)
  hf_tok.save(tmp_path / "hub")
  assert tk.HFTokenizer.load(tmp_path / "hub").chat_template == tk.LLADA_HUB_CHAT_TEMPLATE


def test_foreign_chat_template_without_jinja2_raises(hf_tok, monkeypatch):
  monkeypatch.setattr(tk, "ImmutableSandboxedEnvironment", None)
  monkeypatch.setattr(hf_tok, "chat_template", "{{ messages[0]['content'] }}")
  with pytest.raises(ValueError, match="jinja2"):
    hf_tok.apply_chat_template(MESSAGES)


def test_chat_template_runs_sandboxed(hf_tok, monkeypatch):
  jinja2 = pytest.importorskip("jinja2")
  monkeypatch.setattr(hf_tok, "chat_template", "{{ messages.append(1) }}")
  with pytest.raises(jinja2.exceptions.SecurityError):
    hf_tok.apply_chat_template(MESSAGES)


@pytest.mark.parametrize("messages", [[{"role": "user"}], [{"role": "user", "content": 3}], ["hi"]])
def test_malformed_chat_messages_raise_value_error(hf_tok, messages):
  with pytest.raises(ValueError, match="'role' and 'content'"):
    hf_tok.apply_chat_template(messages)


def test_chat_without_a_template_raises_value_error(plain_hf_dir):
  with pytest.raises(ValueError, match="no chat_template"):
    tk.HFTokenizer.load(plain_hf_dir).apply_chat_template(MESSAGES)
