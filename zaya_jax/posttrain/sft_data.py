"""SFT data: chat-formatted examples with an assistant-only target mask, packed into the trainer's batches.

An example is a conversation, messages [{"role": "system" | "user" | "assistant", "content": ...}], rendered
with the checkpoint's chat template into `tokens` [n] and `targets` [n]: 1 on the tokens the model learns to
write (each assistant reply and the end-of-turn marker that closes it), 0 on what it is given (markers,
system and user turns). A content is a string or a list of segments (strings, or token-id lists spliced in
verbatim, as Markovian RSA splices candidate tails). Sources (`config.sft`, configs/posttrain/sft.py):

  problems     the built-in generator: user = a problem, assistant = its step-by-step solution ending in
               \\boxed{answer} (`zaya_jax.data.ProblemSource`, train split)
  aggregation  aggregation cold-start examples (spec §5.4): user = the Markovian RSA aggregation prompt of
               zaya_jax/sampling/rsa.py with the question and the last τ tokens of C candidate solutions, each
               correct or, with probability `wrong_fraction`, with a corrupted step or final answer;
               assistant = the correct full solution
  jsonl        JSON Lines files, one example per line: {"messages": [...]} or {"prompt": str, "response": str}

Examples are mixed by `config.sft.mixture` weights (per example), shuffled, and first-fit packed into rows of
`config.train.seq_len` tokens, each example one segment; an example longer than a row is an error (cutting a
conversation would train replies on lost context). Batches follow the pretraining contract
(zaya_jax/data/pipeline.py) except for the loss mask:

  loss_mask[t] = 1 iff tokens[t+1] is a target of the same segment as tokens[t]

so the loss counts assistant tokens only and nothing attends or predicts across examples (segment_ids).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

from zaya_jax.data import corpus, pipeline, sources
from zaya_jax.data.tokenizer import ByteTokenizer, Tokenizer
from zaya_jax.sampling.chat import ByteChatTemplate, ChatTemplate, ChatTemplateError, JinjaChatTemplate, Segment
from zaya_jax.sampling.rsa import AggregationTemplate
from zaya_jax.train.feeds import DataFeed, local_batch_size

ROLES = ("system", "user", "assistant")
SOURCES = ("problems", "aggregation", "jsonl")
_READ = grain.ReadOptions(num_threads=2, prefetch_buffer_size=64)


class SFTDataError(ValueError):
  """A malformed SFT example (named by file and line) or an SFT data config that cannot be built."""


# ---------------------------------------------------------------------------------------------------------
# Chat formatting with an assistant-only target mask.


def _segments(content: str | Sequence[Segment]) -> list[Segment]:
  return [content] if isinstance(content, str) else list(content)


def _encode_segments(tokenizer: Tokenizer, content) -> list[int]:
  ids = []
  for segment in _segments(content):
    ids.extend(tokenizer.encode(segment) if isinstance(segment, str) else (int(i) for i in segment))
  return ids


def _encode_byte(tokenizer: ByteTokenizer, template: ByteChatTemplate, messages) -> tuple[list[int], list[int]]:
  """`<bos>` then per turn `<|role|>` content `<|end_of_turn|>`; an assistant turn opens as the template's
  generation prompt does (`<|assistant|>`, plus `<think>` if the template thinks)."""
  marker = tokenizer.token_id
  tokens, targets = [tokenizer.bos_id], [0]
  for message in messages:
    content = _encode_segments(tokenizer, message["content"])
    if message["role"] == "assistant":
      head = [marker("<|assistant|>")] + ([marker("<think>")] if template.think else [])
      body = content + [marker("<|end_of_turn|>")]
      tokens += head + body
      targets += [0] * len(head) + [1] * len(body)
    else:
      turn = [marker(f"<|{message['role']}|>")] + content + [marker("<|end_of_turn|>")]
      tokens += turn
      targets += [0] * len(turn)
  return tokens, targets


_PLACEHOLDER = "\x00tokens{}\x00"
_PLACEHOLDER_RE = re.compile("\x00tokens(\\d+)\x00")


def _encode_jinja(tokenizer: Tokenizer, template: JinjaChatTemplate, messages) -> tuple[list[int], list[int]]:
  """Renders the conversation once; an assistant reply is the text between the render of the turns before it
  (with the generation prompt) and the render that includes it, so its closing marker is a target too.
  Token-id segments travel through the template as placeholders and are spliced back after tokenising."""
  spliced: list[list[int]] = []

  def as_text(content):
    parts = []
    for segment in _segments(content):
      if isinstance(segment, str):
        parts.append(segment)
      else:
        parts.append(_PLACEHOLDER.format(len(spliced)))
        spliced.append([int(i) for i in segment])
    return "".join(parts)

  turns = [{"role": m["role"], "content": as_text(m["content"])} for m in messages]
  full = template.render(turns, add_generation_prompt=False)
  spans = []
  for k, turn in enumerate(turns):
    if turn["role"] == "assistant":
      before = template.render(turns[:k], add_generation_prompt=True)
      through = template.render(turns[:k + 1], add_generation_prompt=False)
      if not (full.startswith(through) and through.startswith(before)):
        raise ChatTemplateError("the chat template does not render a conversation as the concatenation of its "
                                "turns, so the assistant replies cannot be located for the loss mask")
      spans.append((len(before), len(through)))
  bounds = sorted({0, len(full), *(b for span in spans for b in span)})
  tokens, targets = [], []
  for start, end in zip(bounds, bounds[1:]):
    is_target = any(s <= start and end <= e for s, e in spans)
    pieces = _PLACEHOLDER_RE.split(full[start:end])  # text, index, text, index, ..., text
    for i, piece in enumerate(pieces):
      ids = spliced[int(piece)] if i % 2 else tokenizer.encode(piece)
      tokens += ids
      targets += [int(is_target)] * len(ids)
  return tokens, targets


def check_messages(messages: Any, where: str) -> list[dict]:
  """`messages` if it is a valid conversation (roles, contents, at least one assistant turn), else an
  SFTDataError that starts with `where`."""
  if not isinstance(messages, list) or not messages:
    raise SFTDataError(f"{where}: 'messages' must be a non-empty list")
  for i, m in enumerate(messages):
    if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
      raise SFTDataError(f"{where}: message {i} must be an object with exactly 'role' and 'content', got {m!r}")
    if m["role"] not in ROLES:
      raise SFTDataError(f"{where}: message {i} has role {m['role']!r}; roles are {ROLES}")
    if not isinstance(m["content"], (str, list)):
      raise SFTDataError(f"{where}: message {i} content is {type(m['content']).__name__}, not a string")
  if not any(m["role"] == "assistant" for m in messages):
    raise SFTDataError(f"{where}: no assistant message, so nothing to train on")
  return list(messages)


def encode_chat(tokenizer: Tokenizer, chat_template: ChatTemplate, messages: Sequence[Mapping]) -> dict:
  """A conversation -> {"tokens": int32 [n], "targets": int32 [n]} (module docstring).

  For one user turn and one reply, tokens = chat_template.user_prompt(tokenizer, content) + reply, so SFT
  sees the exact prompt sampling and Markovian RSA build at test time.
  """
  messages = check_messages(list(messages), "conversation")
  if isinstance(chat_template, ByteChatTemplate):
    if not isinstance(tokenizer, ByteTokenizer):
      raise ChatTemplateError(f"the built-in chat template is written in ByteTokenizer ids, got {tokenizer!r}")
    tokens, targets = _encode_byte(tokenizer, chat_template, messages)
  elif isinstance(chat_template, JinjaChatTemplate):
    tokens, targets = _encode_jinja(tokenizer, chat_template, messages)
  else:
    raise ChatTemplateError(f"SFT needs a ByteChatTemplate or a JinjaChatTemplate, got {chat_template!r}")
  return {"tokens": np.asarray(tokens, np.int32), "targets": np.asarray(targets, np.int32)}


# ---------------------------------------------------------------------------------------------------------
# Example sources.


def read_jsonl(path: str) -> list[tuple[str, list[dict]]]:
  """(where = "file:line", messages) per non-blank line; a malformed line raises SFTDataError naming it."""
  out = []
  for where, _, record in sources.iter_jsonl(path, SFTDataError):
    if "messages" in record:
      messages = check_messages(record["messages"], where)
      if any(not isinstance(m["content"], str) for m in messages):
        raise SFTDataError(f"{where}: message contents must be strings")
    elif "prompt" in record and "response" in record:
      if not isinstance(record["prompt"], str) or not isinstance(record["response"], str):
        raise SFTDataError(f"{where}: 'prompt' and 'response' must be strings")
      messages = [{"role": "user", "content": record["prompt"]},
                  {"role": "assistant", "content": record["response"]}]
    else:
      raise SFTDataError(f"{where}: needs 'messages', or 'prompt' and 'response' (got keys {sorted(record)})")
    out.append((where, messages))
  return out


def problem_messages(record: dict) -> list[dict]:
  """A generator record as one exchange: the problem, then its worked solution."""
  return [{"role": "user", "content": record["problem"]}, {"role": "assistant", "content": record["solution"]}]


_INTEGER = re.compile(r"-?\d+")


def _replace_integer(text: str, rng: np.random.Generator) -> str | None:
  """`text` with one of its integers (chosen by rng) moved by a nonzero offset, or None if it has none."""
  matches = list(_INTEGER.finditer(text))
  if not matches:
    return None
  m = matches[int(rng.integers(len(matches)))]
  offset = int(rng.integers(1, 10)) * (1 if rng.random() < 0.5 else -1)
  return text[:m.start()] + str(int(m.group()) + offset) + text[m.end():]


def corrupt_solution(record: dict, rng: np.random.Generator) -> str:
  """A wrong version of the record's solution: a wrong final answer, or (half the time) also a wrong number in
  one step, as if an error had propagated to the end."""
  steps, _, _ = record["solution"].rpartition("\n")
  wrong = _replace_integer(record["answer"], rng)
  if wrong is None:
    raise SFTDataError(f"record {record['id']!r}: answer {record['answer']!r} has no number to corrupt")
  if steps and rng.random() < 0.5:
    steps = _replace_integer(steps, rng) or steps
  return (steps + "\n" if steps else "") + f"The answer is \\boxed{{{wrong}}}."


def aggregation_messages(record: dict, tokenizer: Tokenizer, rng: np.random.Generator, *, candidates: int,
                         tail: int, wrong_fraction: float,
                         template: AggregationTemplate = AggregationTemplate()) -> list[dict]:
  """An aggregation cold-start example: the RSA aggregation prompt holding the question and the last `tail`
  tokens of `candidates` solutions (each corrupted with probability `wrong_fraction`) -> the correct solution.

  The user content is `template.segments(question, tails)`, so the prompt equals
  `PromptBuilder(tokenizer, chat_template, question, template).aggregation(tails)`.
  """
  tails = []
  for _ in range(candidates):
    text = corrupt_solution(record, rng) if rng.random() < wrong_fraction else record["solution"]
    tails.append(tokenizer.encode(text)[-tail:])
  return [{"role": "user", "content": template.segments(record["problem"], tails)},
          {"role": "assistant", "content": record["solution"]}]


# ---------------------------------------------------------------------------------------------------------
# Packing and the trainer's data feed.


def to_batch(packed: dict[str, np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
  """A packed grain batch (tokens, targets and the packer's segment ids / positions) -> the trainer's batch."""
  segment_ids = packed["tokens_segment_ids"].astype(np.int32)
  tokens = np.where(segment_ids == 0, pad_id, packed["tokens"]).astype(np.int32)
  loss_mask = pipeline.loss_mask_from_segments(segment_ids)
  loss_mask[..., :-1] *= packed["targets"][..., 1:].astype(np.int32)
  return {"tokens": tokens, "segment_ids": segment_ids, "positions": packed["tokens_positions"].astype(np.int32),
          "loss_mask": loss_mask}


def pack(examples: grain.IterDataset, seq_len: int, num_bins: int, seed: int, shuffle_bins: bool):
  """First-fit packing of {"tokens", "targets"} examples into rows of seq_len (grain's packer)."""
  return grain.experimental.FirstFitPackIterDataset(examples, length_struct={"tokens": seq_len, "targets": seq_len},
                                                    num_packing_bins=num_bins, seed=seed, shuffle_bins=shuffle_bins)


def _check_length(example: dict, seq_len: int, where: str) -> dict:
  if len(example["tokens"]) > seq_len:
    raise SFTDataError(f"{where}: the example has {len(example['tokens'])} tokens, more than "
                       f"train.seq_len={seq_len}; raise seq_len (long-context SFT) or shorten it")
  return example


class _EncodeRecord:
  """generator record -> {"tokens", "targets"}: its problem exchange, or (with `aggregation`, the config's
  aggregation group) an aggregation example whose draws depend on the record only, so it is the same on
  every epoch."""

  def __init__(self, tokenizer, chat_template, seq_len: int, aggregation: Mapping | None = None):
    self.tokenizer, self.chat_template, self.seq_len = tokenizer, chat_template, seq_len
    self.aggregation = aggregation

  def __call__(self, record: dict) -> dict:
    if self.aggregation is None:
      messages = problem_messages(record)
    else:
      agg = self.aggregation
      rng = np.random.default_rng([agg["seed"], zlib.crc32(record["id"].encode())])
      messages = aggregation_messages(record, self.tokenizer, rng, candidates=agg["candidates"], tail=agg["tail"],
                                      wrong_fraction=agg["wrong_fraction"])
    example = encode_chat(self.tokenizer, self.chat_template, messages)
    return _check_length(example, self.seq_len, f"generated record {record['id']}")


def _problem_source(spec: Mapping, split: str) -> sources.ProblemSource:
  try:
    return sources.ProblemSource(spec["families"], spec["difficulties"], split, spec["seed"], spec["num_records"])
  except (sources.SourceConfigError, corpus.CorpusError) as e:
    raise SFTDataError(f"sft problems/aggregation source: {e}") from e


def example_datasets(sft: Mapping, tokenizer: Tokenizer, chat_template: ChatTemplate,
                     seq_len: int) -> dict[str, grain.MapDataset]:
  """{source name: MapDataset of encoded examples} for the sources with a positive mixture weight."""
  unknown = set(sft["mixture"]) - set(SOURCES)
  if unknown:
    raise SFTDataError(f"sft.mixture names unknown sources {sorted(unknown)}; sources are {SOURCES}")
  weights = {name: float(w) for name, w in sft["mixture"].items() if w > 0}
  if not weights:
    raise SFTDataError(f"sft.mixture gives no source a positive weight: {dict(sft['mixture'])}")
  out = {}
  if "problems" in weights:
    encode = _EncodeRecord(tokenizer, chat_template, seq_len)
    out["problems"] = grain.MapDataset.source(_problem_source(sft["problems"], "train")).map(encode)
  if "aggregation" in weights:
    agg = sft["aggregation"]
    if not set(agg["families"]) <= set(corpus.MATH_FAMILIES):
      raise SFTDataError(f"aggregation families must be math families {corpus.MATH_FAMILIES} (their answers are "
                         f"numbers that can be corrupted), got {list(agg['families'])}")
    if agg["candidates"] < 1 or agg["tail"] < 1 or not 0.0 <= agg["wrong_fraction"] <= 1.0:
      raise SFTDataError(f"aggregation needs candidates >= 1, tail >= 1 and 0 <= wrong_fraction <= 1, got {agg}")
    encode = _EncodeRecord(tokenizer, chat_template, seq_len, agg)
    out["aggregation"] = grain.MapDataset.source(_problem_source(agg, "train")).map(encode)
  if "jsonl" in weights:
    files = sources.expand_paths(list(sft["jsonl"]["paths"]))
    examples = [_check_length(encode_chat(tokenizer, chat_template, messages), seq_len, where)
                for path in files for where, messages in read_jsonl(path)]  # every line checked before training
    if not examples:
      raise SFTDataError(f"the sft jsonl files {files} hold no examples")
    out["jsonl"] = grain.MapDataset.source(examples)
  return out


def _seed(*parts: int) -> int:
  return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def train_iterator(sft: Mapping, tokenizer: Tokenizer, chat_template: ChatTemplate, *, seq_len: int,
                   batch_size: int, seed: int, process_index: int = 0, process_count: int = 1):
  """An endless, checkpointable (grain) iterator of packed SFT batches [batch_size, seq_len]; process p of P
  draws from every P-th example of each source."""
  datasets = example_datasets(sft, tokenizer, chat_template, seq_len)
  names = list(datasets)
  mixed = grain.MapDataset.mix([datasets[n][process_index::process_count].shuffle(seed=_seed(seed, i)).repeat()
                                for i, n in enumerate(names)], [float(sft["mixture"][n]) for n in names])
  rows = pack(mixed.to_iter_dataset(_READ), seq_len, sft["num_packing_bins"], _seed(seed, len(names)), True)
  return iter(rows.batch(batch_size, drop_remainder=True).map(functools.partial(to_batch,
                                                                               pad_id=tokenizer.pad_id)))


def eval_iterator(sft: Mapping, tokenizer: Tokenizer, chat_template: ChatTemplate, *, seq_len: int,
                  batch_size: int, process_index: int = 0, process_count: int = 1):
  """Packed batches of held-out generator problems in a fixed order (the same batches at every evaluation)."""
  spec = {**sft["problems"], "num_records": 1 << 20}
  examples = grain.MapDataset.source(_problem_source(spec, "heldout"))[process_index::process_count]
  rows = pack(examples.map(_EncodeRecord(tokenizer, chat_template, seq_len)).to_iter_dataset(_READ), seq_len,
              sft["num_packing_bins"], 0, False)
  return iter(rows.batch(batch_size, drop_remainder=True).map(functools.partial(to_batch,
                                                                               pad_id=tokenizer.pad_id)))


def sft_feed(config: ml_collections.ConfigDict, tokenizer: Tokenizer, chat_template: ChatTemplate,
             process_index: int = 0, process_count: int = 1) -> DataFeed:
  """The trainer's DataFeed for config.sft at config.train's shapes (this process's share of each global
  batch): one phase; eval = held-out problems."""
  sft, tc = config.sft.to_dict(), config.train
  shapes = dict(seq_len=tc.seq_len, batch_size=local_batch_size(tc.batch_size, process_count),
                process_index=process_index, process_count=process_count)

  def iterator(split: str, phase: int):
    del phase
    if split == "train":
      return train_iterator(sft, tokenizer, chat_template, seed=tc.seed, **shapes)
    if split != "eval":
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    return eval_iterator(sft, tokenizer, chat_template, **shapes)

  return DataFeed(iterator, lambda step: 0)
