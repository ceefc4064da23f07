"""Tokenizers behind one small interface: a byte-level tokenizer for tiny models and a `tokenizers` wrapper.

Both expose `encode(text) -> list[int]`, `decode(ids) -> str`, `vocab_size` and the `pad_id`, `bos_id`,
`eos_id` special ids. `encode` never adds BOS/EOS: the data pipeline adds them once per document.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable


class TokenizerError(ValueError):
  """A tokenizer that cannot be built, or ids it cannot decode."""


@runtime_checkable
class Tokenizer(Protocol):
  """What the data pipeline, SFT and sampling code need from a tokenizer."""

  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str) -> list[int]:
    ...

  def decode(self, ids: Sequence[int]) -> str:
    ...


class ByteTokenizer:
  """UTF-8 bytes shifted past a block of special ids; vocab 272, so it fits the tiny model's 512 slots.

  Layout: 0 `<pad>`, 1 `<bos>`, 2 `<eos>`, 3.. the chat/reasoning markers in `SPECIAL_TOKENS` order,
  unused reserved ids up to `BYTE_OFFSET - 1`, then byte b at `BYTE_OFFSET + b`. Text is never scanned
  for special-token strings (a document that contains "<think>" gets its bytes, not the marker id); code
  that builds prompts inserts markers with `token_id(name)`.
  """

  SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<think>",
                    "</think>", "<|end_of_turn|>")
  BYTE_OFFSET = 16  # room for a few more markers without renumbering the bytes
  pad_id, bos_id, eos_id = 0, 1, 2
  vocab_size = BYTE_OFFSET + 256

  def encode(self, text: str) -> list[int]:
    return [b + self.BYTE_OFFSET for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    """Bytes back to text; pad/bos/eos and unused reserved ids are dropped, markers written as their names.

    Byte runs that are not valid UTF-8 (e.g. a sequence cut mid-character) decode with U+FFFD.
    """
    out, pending = [], bytearray()
    for i in ids:
      i = int(i)
      if not 0 <= i < self.vocab_size:
        raise TokenizerError(f"token id {i} is outside the byte tokenizer's vocabulary [0, {self.vocab_size})")
      if i >= self.BYTE_OFFSET:
        pending.append(i - self.BYTE_OFFSET)
        continue
      out.append(pending.decode("utf-8", errors="replace"))
      pending = bytearray()
      if i > self.eos_id and i < len(self.SPECIAL_TOKENS):
        out.append(self.SPECIAL_TOKENS[i])
    out.append(pending.decode("utf-8", errors="replace"))
    return "".join(out)

  def token_id(self, name: str) -> int:
    """Id of a special token, e.g. `token_id("<think>")`."""
    if name not in self.SPECIAL_TOKENS:
      raise TokenizerError(f"unknown special token {name!r}; known: {self.SPECIAL_TOKENS}")
    return self.SPECIAL_TOKENS.index(name)

  def __repr__(self) -> str:
    return "ByteTokenizer()"


class HFTokenizer:
  """A `tokenizers.Tokenizer` (a `tokenizer.json` file) with named special ids.

  `encode` does not run the file's post-processor (no template BOS/EOS); special tokens registered in
  the file are matched in text as the `tokenizers` library does.
  """

  # Gemma 3 (ZAYA1's tokenizer) names; used when neither arguments nor tokenizer_config.json name them.
  DEFAULT_SPECIAL = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>"}

  def __init__(self, tokenizer, *, bos: str, eos: str, pad: str, name: str = "tokenizer"):
    self._tok = tokenizer
    self.name = name
    self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    ids = {}
    for role, token in (("bos", bos), ("eos", eos), ("pad", pad)):
      token_id = tokenizer.token_to_id(token)
      if token_id is None:
        raise TokenizerError(f"{name}: {role} token {token!r} is not in the vocabulary")
      ids[role] = token_id
    self.bos_id, self.eos_id, self.pad_id = ids["bos"], ids["eos"], ids["pad"]

  @classmethod
  def from_file(cls, path: str, *, bos: str | None = None, eos: str | None = None,
                pad: str | None = None) -> HFTokenizer:
    """Loads `tokenizer.json` (a file, or a directory holding one).

    Special-token names come from the arguments, else from a `tokenizer_config.json` beside the file
    (`bos_token`, `eos_token`, `pad_token`), else `DEFAULT_SPECIAL`.
    """
    import tokenizers  # only this class needs the library

    if os.path.isdir(path):
      path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
      raise TokenizerError(f"no tokenizer file at {path}")
    names = dict(cls.DEFAULT_SPECIAL)
    config_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    if os.path.isfile(config_path):
      with open(config_path) as f:
        config = json.load(f)
      for role in names:
        value = config.get(f"{role}_token")
        if isinstance(value, dict):  # transformers' serialised AddedToken
          value = value.get("content")
        if value:
          names[role] = value
    for role, value in (("bos", bos), ("eos", eos), ("pad", pad)):
      if value is not None:
        names[role] = value
    try:
      tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the library raises a bare Exception on a bad file
      raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from e
    return cls(tok, name=path, **names)

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < self.vocab_size]
    if bad:
      raise TokenizerError(f"token ids {bad[:5]} are outside {self.name}'s vocabulary [0, {self.vocab_size})")
    return self._tok.decode(ids, skip_special_tokens=True)

  def __repr__(self) -> str:
    return f"HFTokenizer({self.name!r})"


def load_tokenizer(spec: str) -> ByteTokenizer | HFTokenizer:
  """`"byte"` -> ByteTokenizer; a `tokenizer.json` path or a directory holding one -> HFTokenizer."""
  if spec == "byte":
    return ByteTokenizer()
  if os.path.exists(spec):
    return HFTokenizer.from_file(spec)
  raise TokenizerError(f"tokenizer spec {spec!r} is neither 'byte' nor an existing tokenizer.json path")
