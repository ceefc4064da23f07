"""Tokenizers: byte layout and round trips, a tokenizer.json built here (no download), load_tokenizer."""

import json

import pytest

from zaya_jax.data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, TokenizerError, load_tokenizer

TEXTS = ["", "hello world", "Solve for x: 2x + 3 = 7.\n\\boxed{2}", "ünïcödé ✓ 🙂 日本語",
         "tabs\tand\r\nnewlines"]


def test_byte_tokenizer_layout_fits_tiny_model():
  tok = ByteTokenizer()
  assert isinstance(tok, Tokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)  # configs/tiny.py: pad 0, bos 1, eos 2
  assert tok.vocab_size <= 512
  assert tok.token_id("<think>") == tok.SPECIAL_TOKENS.index("<think>") < tok.BYTE_OFFSET
  ids = tok.encode("".join(map(chr, range(128))) + "\U0010ffff")
  assert min(ids) >= tok.BYTE_OFFSET and max(ids) < tok.vocab_size


@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
  tok = ByteTokenizer()
  ids = tok.encode(text)
  assert len(ids) == len(text.encode("utf-8"))
  assert tok.decode(ids) == text
  assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == text  # bos/eos/pad are dropped


def test_byte_decode_markers_and_errors():
  tok = ByteTokenizer()
  ids = [tok.token_id("<think>"), *tok.encode("hm"), tok.token_id("</think>"), *tok.encode("ok")]
  assert tok.decode(ids) == "<think>hm</think>ok"
  assert tok.decode(tok.encode("é")[:1]) == "\ufffd"  # a cut multi-byte character does not raise
  assert tok.encode("<think>") != [tok.token_id("<think>")]  # text never becomes a marker
  with pytest.raises(TokenizerError, match="outside"):
    tok.decode([tok.vocab_size])
  with pytest.raises(TokenizerError, match="unknown special token"):
    tok.token_id("<nope>")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """A byte-level BPE tokenizer.json trained on a few sentences, Gemma-style special tokens."""
  from tokenizers import Tokenizer as RawTokenizer
  from tokenizers import decoders, models, pre_tokenizers, trainers

  raw = RawTokenizer(models.BPE())
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  raw.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<bos>", "<s>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  raw.train_from_iterator(["the cat sat on the mat"] * 20 + ["Solve for x: 2x + 3 = 7."], trainer)
  path = tmp_path_factory.mktemp("hf")
  raw.save(str(path / "tokenizer.json"))
  return path


@pytest.mark.parametrize("text", TEXTS)
def test_hf_round_trip(hf_dir, text):
  tok = HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))
  assert isinstance(tok, Tokenizer)
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  ids = tok.encode(text)
  assert all(0 <= i < tok.vocab_size for i in ids) and tok.bos_id not in ids  # no template specials
  assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == text


def test_hf_special_token_sources_and_errors(hf_dir, tmp_path):
  assert HFTokenizer.from_file(str(hf_dir), bos="<s>").bos_id == 3
  with pytest.raises(TokenizerError, match="bos token '<missing>'"):
    HFTokenizer.from_file(str(hf_dir), bos="<missing>")
  # tokenizer_config.json beside the file names the specials (transformers' AddedToken dict form too).
  (tmp_path / "tokenizer.json").write_text((hf_dir / "tokenizer.json").read_text())
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": {"content": "<s>"}}))
  assert HFTokenizer.from_file(str(tmp_path)).bos_id == 3
  with pytest.raises(TokenizerError, match="no tokenizer file"):
    HFTokenizer.from_file(str(tmp_path / "absent.json"))
  (tmp_path / "bad" ).mkdir()
  (tmp_path / "bad" / "tokenizer.json").write_text("{not json")
  with pytest.raises(TokenizerError, match="cannot read"):
    HFTokenizer.from_file(str(tmp_path / "bad"))
  tok = HFTokenizer.from_file(str(hf_dir))
  with pytest.raises(TokenizerError, match="outside"):
    tok.decode([tok.vocab_size + 5])


def test_load_tokenizer(hf_dir):
  assert isinstance(load_tokenizer("byte"), ByteTokenizer)
  assert isinstance(load_tokenizer(str(hf_dir)), HFTokenizer)
  with pytest.raises(TokenizerError, match="neither"):
    load_tokenizer("gemma3")
