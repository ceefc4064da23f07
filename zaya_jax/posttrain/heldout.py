"""Held-out accuracy of a post-training stage: greedy answers to built-in problems of the held-out split.

Problem i is `make_record(families[i % F], difficulties[(i // F) % D], seed, i, split="heldout")` (the
indexing of zaya_jax.data.ProblemSource), asked as one user turn of the checkpoint's chat template, decoded
greedily until a stop token or `max_new_tokens`, and scored with `zaya_jax.rewards.math.math_reward` (the last
`\\boxed{}`, Math-Verify). The config group (configs/posttrain/__init__.py `heldout_config`):

  families, difficulties, count, seed   which problems
  max_new_tokens                        decode budget per answer
  batch_size                            prompts per generate call (the last batch is padded: one compile)
  evaluate_init                         also score the stage's starting checkpoint (zaya_jax/posttrain/stages.py)
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

import numpy as np

from zaya_jax.config import ZayaConfig
from zaya_jax.data import corpus
from zaya_jax.data.tokenizer import Tokenizer
from zaya_jax.rewards.math import extract_answer, math_reward
from zaya_jax.sampling import ChatTemplate, Sampling, generate, left_pad, reply_stop_tokens


def heldout_records(families, difficulties, count: int, seed: int) -> list[dict]:
  """The `count` held-out problems of the module docstring."""
  families, difficulties = tuple(families), tuple(difficulties)
  return [corpus.make_record(families[i % len(families)], difficulties[(i // len(families)) % len(difficulties)],
                             seed, i, split="heldout") for i in range(count)]


def greedy_replies(params, model_config: ZayaConfig, tokenizer: Tokenizer, prompts: list[list[int]], *,
                   max_new_tokens: int, batch_size: int) -> list[tuple[list[int], bool]]:
  """(reply token ids, whether a stop token ended it) per prompt, greedy, `batch_size` prompts per call."""
  width = max(map(len, prompts))
  greedy = Sampling(temperature=0.0, vocab_limit=min(tokenizer.vocab_size, model_config.vocab_size))
  stop = reply_stop_tokens(model_config, tokenizer)
  out = []
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start:start + batch_size]
    ids, mask = left_pad(chunk + [chunk[0]] * (batch_size - len(chunk)), width, tokenizer.pad_id)
    result = generate(params, model_config, ids, prompt_mask=mask, max_new_tokens=max_new_tokens,
                      sampling=greedy, stop_tokens=stop, pad_id=tokenizer.pad_id)
    tokens, lengths, stopped = map(np.asarray, (result.tokens, result.lengths, result.stopped))
    out += [(tokens[b, :lengths[b]].tolist(), bool(stopped[b])) for b in range(len(chunk))]
  return out


def _rate(hits: list[bool]) -> float:
  return float(np.mean(hits)) if hits else 0.0


def summarize(rows: list[dict], families, difficulties) -> dict:
  """The held-out result of scored replies, rows {"record", "text", "tokens", "stopped", "answer", "correct"}:
  {"accuracy", "correct", "count", "by_family", "by_difficulty", "mean_response_tokens", "stopped_fraction",
  "answered_fraction", "top_answers" ([answer, replies] for the 3 most frequent extracted answers: a policy
  collapsing onto one answer, a reward hack, shows here first), "samples" (the first three)}."""
  correct = [r["correct"] for r in rows]
  answers = collections.Counter(r["answer"] for r in rows if r["answer"] is not None)
  return {
      "accuracy": _rate(correct), "correct": int(sum(correct)), "count": len(rows),
      "by_family": {f: _rate([r["correct"] for r in rows if r["record"]["family"] == f]) for f in families},
      "by_difficulty": {str(d): _rate([r["correct"] for r in rows if r["record"]["difficulty"] == d])
                        for d in difficulties},
      "mean_response_tokens": float(np.mean([r["tokens"] for r in rows])),
      "stopped_fraction": _rate([r["stopped"] for r in rows]),
      "answered_fraction": _rate([r["answer"] is not None for r in rows]),
      "top_answers": [[answer, count] for answer, count in answers.most_common(3)],
      "samples": [{"problem": r["record"]["problem"], "reference": r["record"]["answer"], "response": r["text"],
                   "correct": r["correct"]} for r in rows[:3]],
  }


def evaluate_heldout(params, model_config: ZayaConfig, tokenizer: Tokenizer, chat_template: ChatTemplate,
                     cfg: Mapping) -> dict:
  """Greedy held-out accuracy of `params` on the problems of `cfg` -> `summarize`'s result."""
  records = heldout_records(cfg["families"], cfg["difficulties"], cfg["count"], cfg["seed"])
  prompts = [chat_template.user_prompt(tokenizer, [r["problem"]]) for r in records]
  replies = greedy_replies(params, model_config, tokenizer, prompts, max_new_tokens=cfg["max_new_tokens"],
                           batch_size=cfg["batch_size"])
  rows = []
  for record, (ids, stopped) in zip(records, replies):
    text = tokenizer.decode(ids)
    rows.append({"record": record, "text": text, "tokens": len(ids), "stopped": stopped,
                 "answer": extract_answer(text), "correct": math_reward(text, record["answer"]) == 1.0})
  return summarize(rows, cfg["families"], cfg["difficulties"])


def format_heldout(result: dict) -> str:
  """One line: accuracy, per-family accuracies, mean reply length, the most frequent answer."""
  families = ", ".join(f"{f} {a:.0%}" for f, a in result["by_family"].items())
  line = (f"held-out accuracy {result['accuracy']:.1%} ({result['correct']}/{result['count']}; {families}); "
          f"mean reply {result['mean_response_tokens']:.0f} tokens, {result['stopped_fraction']:.0%} stopped")
  if result["top_answers"]:
    answer, count = result["top_answers"][0]
    line += f"; most frequent answer {answer!r} in {count}/{result['count']}"
  return line
