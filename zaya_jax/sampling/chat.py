"""Chat templates that turn one user message into prompt token ids.

A message is a list of segments: text (tokenised by the tokenizer) or token-id lists spliced in verbatim, so
candidate tails cut at arbitrary token boundaries enter aggregation prompts exactly as they were generated.

- `ByteChatTemplate`: the built-in template for toy models on `ByteTokenizer`, written with its marker ids
  (`<bos><|user|>message<|end_of_turn|><|assistant|>`).
- `JinjaChatTemplate`: a checkpoint's `chat_template` (tokenizer_config.json), rendered with jinja2 the way
  transformers renders it; `load_chat_template(directory)` reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Protocol, Union

from zaya_jax.config import ZayaConfig
from zaya_jax.data.tokenizer import ByteTokenizer, Tokenizer
from zaya_jax.sampling.generation import default_stop_tokens

Segment = Union[str, Sequence[int]]


class ChatTemplateError(ValueError):
  """A chat template that cannot be loaded or rendered."""


class ChatTemplate(Protocol):

  def user_prompt(self, tokenizer: Tokenizer, segments: Sequence[Segment]) -> list[int]:
    """Token ids of one user turn holding `segments`, followed by the start of the assistant's reply."""
    ...


def _encode_segments(tokenizer: Tokenizer, segments: Sequence[Segment]) -> list[int]:
  ids = []
  for segment in segments:
    ids.extend(tokenizer.encode(segment) if isinstance(segment, str) else (int(i) for i in segment))
  return ids


class ByteChatTemplate:
  """`<bos><|user|>` message `<|end_of_turn|><|assistant|>` in ByteTokenizer marker ids (+ `<think>` if asked)."""

  def __init__(self, think: bool = False):
    self.think = think

  def user_prompt(self, tokenizer: Tokenizer, segments: Sequence[Segment]) -> list[int]:
    if not isinstance(tokenizer, ByteTokenizer):
      raise ChatTemplateError(f"the built-in chat template is written in ByteTokenizer ids, got {tokenizer!r}")
    marker = tokenizer.token_id
    reply = [marker("<|assistant|>")] + ([marker("<think>")] if self.think else [])
    return ([tokenizer.bos_id, marker("<|user|>")] + _encode_segments(tokenizer, segments)
            + [marker("<|end_of_turn|>")] + reply)


class JinjaChatTemplate:
  """A transformers-style jinja chat template (`messages`, `add_generation_prompt`, special-token strings)."""

  # Token-id segments are rendered as numbered placeholders, then the rendered text is split around them.
  _PLACEHOLDER = "\x00segment{}\x00"

  def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
    try:
      import jinja2
      import jinja2.sandbox
    except ImportError as e:  # only checkpoint templates need it; toy models use ByteChatTemplate
      raise ChatTemplateError("rendering a checkpoint's chat_template needs jinja2 (pip install jinja2)") from e

    def raise_exception(message):
      raise ChatTemplateError(f"chat template error: {message}")

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
      self._template = env.from_string(source)
    except jinja2.TemplateError as e:
      raise ChatTemplateError(f"cannot parse chat template: {e}") from e
    self._special = {"bos_token": bos_token, "eos_token": eos_token}

  def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The template's text for `messages` ([{"role": ..., "content": ...}])."""
    return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                 **self._special)

  def user_prompt(self, tokenizer: Tokenizer, segments: Sequence[Segment]) -> list[int]:
    content, spliced = [], []
    for segment in segments:
      if isinstance(segment, str):
        content.append(segment)
      else:
        content.append(self._PLACEHOLDER.format(len(spliced)))
        spliced.append(segment)
    text = self.render([{"role": "user", "content": "".join(content)}])
    ids = []
    for i, ids_segment in enumerate(spliced):
      before, sep, text = text.partition(self._PLACEHOLDER.format(i))
      if not sep:
        raise ChatTemplateError("the chat template altered the message content; cannot splice token ids")
      ids += tokenizer.encode(before) + [int(t) for t in ids_segment]
    return ids + tokenizer.encode(text)


def load_chat_template(directory: str) -> JinjaChatTemplate:
  """The `chat_template` of `directory`/tokenizer_config.json (or chat_template.jinja beside it)."""
  config_path = os.path.join(directory, "tokenizer_config.json")
  config = {}
  if os.path.isfile(config_path):
    with open(config_path) as f:
      config = json.load(f)
  source = config.get("chat_template")
  jinja_path = os.path.join(directory, "chat_template.jinja")
  if source is None and os.path.isfile(jinja_path):
    with open(jinja_path) as f:
      source = f.read()
  if not isinstance(source, str):
    raise ChatTemplateError(f"no chat_template string in {config_path} or {jinja_path}")

  def special(name):
    value = config.get(name) or ""
    return value.get("content", "") if isinstance(value, dict) else value

  return JinjaChatTemplate(source, bos_token=special("bos_token"), eos_token=special("eos_token"))


def reply_stop_tokens(config: ZayaConfig, tokenizer: Tokenizer) -> tuple[int, ...]:
  """The ids that end a chat reply: the config's eos id(s), plus `<|end_of_turn|>` with the byte tokenizer."""
  extra = (tokenizer.token_id("<|end_of_turn|>"),) if isinstance(tokenizer, ByteTokenizer) else ()
  return default_stop_tokens(config) + extra
