"""Held-out accuracy of a post-training stage: greedy answers to built-in problems of the held-out split.

Problem i is `make_record(families[i % F], difficulties[(i // F) % D], seed, i, split="heldout")` (the
indexing of zaya_jax.data.ProblemSource), asked as one user turn of the checkpoint's chat template, decoded
greedily until a stop token or `max_new_tokens`, and scored with `zaya_jax.rewards.math.math_reward` (the last
`\\boxed{}`, Math-Verify). The config group (configs/posttrain/__init__.py `heldout_config`):

  families, difficulties, count, seed   which problems
  max_new_tokens                        decode budget per answer
  batch_size                            prompts per generate call (the last batch is padded: one compile)
  samples, temperature                  k > 0 also scores avg@k: k replies per problem sampled at `temperature`
                                        (keys from `seed`), the mean of their 0/1 scores (the report's math
                                        metric, spec §9; the RL stages optimise exactly this, sampled accuracy)
  evaluate_init                         also score the stage's starting checkpoint (zaya_jax/posttrain/stages.py)

Accuracies come with 95% bootstrap intervals over problems, and a stage's change from its init checkpoint with
a paired one (`compare`: both score the same problems, so most of the noise cancels). At ~18% accuracy an
unpaired interval is about +-5 points on 200 problems and +-2.4 on 1000. A greedy reply flips on small weight
changes wherever a problem's correct and wrong replies are close in probability; avg@k averages over them, so
its paired interval is narrower (README: half to two thirds as wide at k = 8).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

import jax
import numpy as np

from zaya_jax.config import ZayaConfig
from zaya_jax.data import corpus
from zaya_jax.data.tokenizer import Tokenizer
from zaya_jax.evaluation.metrics import bootstrap_ci
from zaya_jax.rewards.math import extract_answer, math_reward
from zaya_jax.sampling import ChatTemplate, Sampling, generate, left_pad, reply_stop_tokens


def heldout_records(families, difficulties, count: int, seed: int) -> list[dict]:
  """The `count` held-out problems of the module docstring."""
  families, difficulties = tuple(families), tuple(difficulties)
  return [corpus.make_record(families[i % len(families)], difficulties[(i // len(families)) % len(difficulties)],
                             seed, i, split="heldout") for i in range(count)]


def _decode(params, model_config: ZayaConfig, tokenizer: Tokenizer, rows: list[list[int]], temperature: float,
            key, *, max_new_tokens: int, batch_size: int) -> list[tuple[list[int], bool]]:
  """(reply token ids, whether a stop token ended it) per row, `batch_size` rows per generate call (the last
  call padded, so one compile); call i samples with fold_in(key, i) (key None: greedy)."""
  width = max(map(len, rows))
  sampling = Sampling(temperature=temperature, vocab_limit=min(tokenizer.vocab_size, model_config.vocab_size))
  stop = reply_stop_tokens(model_config, tokenizer)
  out = []
  for call, start in enumerate(range(0, len(rows), batch_size)):
    chunk = rows[start:start + batch_size]
    ids, mask = left_pad(chunk + [chunk[0]] * (batch_size - len(chunk)), width, tokenizer.pad_id)
    result = generate(params, model_config, ids, prompt_mask=mask, max_new_tokens=max_new_tokens,
                      key=None if key is None else jax.random.fold_in(key, call), sampling=sampling,
                      stop_tokens=stop, pad_id=tokenizer.pad_id)
    tokens, lengths, stopped = map(np.asarray, (result.tokens, result.lengths, result.stopped))
    out += [(tokens[b, :lengths[b]].tolist(), bool(stopped[b])) for b in range(len(chunk))]
  return out


def greedy_replies(params, model_config: ZayaConfig, tokenizer: Tokenizer, prompts: list[list[int]], *,
                   max_new_tokens: int, batch_size: int) -> list[tuple[list[int], bool]]:
  """(reply token ids, whether a stop token ended it) per prompt, greedy, `batch_size` prompts per call."""
  return _decode(params, model_config, tokenizer, prompts, 0.0, None, max_new_tokens=max_new_tokens,
                 batch_size=batch_size)


def sampled_replies(params, model_config: ZayaConfig, tokenizer: Tokenizer, prompts: list[list[int]], *, k: int,
                    temperature: float, seed: int, max_new_tokens: int, batch_size: int) -> list[list[list[int]]]:
  """k sampled replies (token ids) per prompt at `temperature`; `batch_size` rows per generate call, the
  sampling key of call i is fold_in(key(seed), i), so the replies are a function of the params and the seed."""
  rows = [prompt for prompt in prompts for _ in range(k)]
  out = _decode(params, model_config, tokenizer, rows, temperature, jax.random.key(seed),
                max_new_tokens=max_new_tokens, batch_size=batch_size)
  return [[ids for ids, _ in out[i * k:(i + 1) * k]] for i in range(len(prompts))]


def summarize_sampled(correct_PK: np.ndarray, temperature: float) -> dict:
  """avg@k of a [problems, k] 0/1 score array: {"k", "temperature", "accuracy" (mean over problems of the mean
  of k scores), "interval_95" (bootstrap over problems), "pass_at_k" (any of k correct), "per_problem" (correct
  replies per problem: what `compare` pairs)}."""
  correct = np.asarray(correct_PK, np.float64)
  interval = bootstrap_ci(correct.mean(axis=1))
  return {"k": int(correct.shape[1]), "temperature": float(temperature), "accuracy": float(correct.mean()),
          "interval_95": [interval.low, interval.high], "pass_at_k": float(correct.any(axis=1).mean()),
          "per_problem": correct.sum(axis=1).astype(int).tolist()}


def _rate(hits: list[bool]) -> float:
  return float(np.mean(hits)) if hits else 0.0


def summarize(rows: list[dict], families, difficulties) -> dict:
  """The held-out result of scored replies, rows {"record", "text", "tokens", "stopped", "answer", "correct"}:
  {"accuracy", "interval_95" ([low, high], bootstrap over problems), "correct", "count", "per_problem" ("0"/"1"
  per problem, in order: what `compare` pairs), "by_family", "by_difficulty", "mean_response_tokens",
  "stopped_fraction", "answered_fraction", "top_answers" ([answer, replies] for the 3 most frequent extracted
  answers: a policy collapsing onto one answer, a reward hack, shows here first), "samples" (the first three)}."""
  correct = [bool(r["correct"]) for r in rows]
  answers = collections.Counter(r["answer"] for r in rows if r["answer"] is not None)
  interval = bootstrap_ci(np.asarray(correct, np.float64)) if rows else None
  return {
      "accuracy": _rate(correct), "interval_95": [interval.low, interval.high] if interval else None,
      "correct": int(sum(correct)), "count": len(rows), "per_problem": "".join("01"[c] for c in correct),
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
  """Greedy held-out accuracy of `params` on the problems of `cfg` -> `summarize`'s result, with avg@k under
  "sampled" (`summarize_sampled`) when cfg["samples"] > 0."""
  records = heldout_records(cfg["families"], cfg["difficulties"], cfg["count"], cfg["seed"])
  prompts = [chat_template.user_prompt(tokenizer, [r["problem"]]) for r in records]
  replies = greedy_replies(params, model_config, tokenizer, prompts, max_new_tokens=cfg["max_new_tokens"],
                           batch_size=cfg["batch_size"])
  rows = []
  for record, (ids, stopped) in zip(records, replies):
    text = tokenizer.decode(ids)
    rows.append({"record": record, "text": text, "tokens": len(ids), "stopped": stopped,
                 "answer": extract_answer(text), "correct": math_reward(text, record["answer"]) == 1.0})
  result = summarize(rows, cfg["families"], cfg["difficulties"])
  k = cfg.get("samples", 0)
  if k:
    sampled = sampled_replies(params, model_config, tokenizer, prompts, k=k, temperature=cfg["temperature"],
                              seed=cfg["seed"], max_new_tokens=cfg["max_new_tokens"], batch_size=cfg["batch_size"])
    result["sampled"] = summarize_sampled(
        np.array([[math_reward(tokenizer.decode(ids), record["answer"]) == 1.0 for ids in replies]
                  for record, replies in zip(records, sampled)]), cfg["temperature"])
  return result


def _paired_change(init_scores, final_scores) -> dict:
  estimate = bootstrap_ci(np.asarray(final_scores, np.float64) - np.asarray(init_scores, np.float64))
  return {"change": estimate.mean, "interval_95": [estimate.low, estimate.high]}


def compare(init: dict | None, final: dict | None) -> dict | None:
  """The change in held-out accuracy from `init` to `final` (two `evaluate_heldout` results on the same
  problems): {"change", "interval_95"} with a paired bootstrap over problems, and under "sampled" the same for
  avg@k ({"k", "change", "interval_95"}) when both scored it with the same k and temperature; None when either
  lacks per-problem scores or they scored different problems."""
  if not init or not final or not init.get("per_problem") or not final.get("per_problem"):
    return None
  if len(init["per_problem"]) != len(final["per_problem"]):
    return None
  scores = lambda result: [c == "1" for c in result["per_problem"]]  # noqa: E731
  change = _paired_change(scores(init), scores(final))
  a, b = init.get("sampled"), final.get("sampled")
  if a and b and (a["k"], a["temperature"], len(a["per_problem"])) == (b["k"], b["temperature"],
                                                                       len(b["per_problem"])):
    change["sampled"] = {"k": a["k"], **_paired_change(np.divide(a["per_problem"], a["k"]),
                                                       np.divide(b["per_problem"], b["k"]))}
  return change


def frequent_answer_split(init: dict, final: dict, references: list[str], top: int = 3) -> dict:
  """Where a change between two `evaluate_heldout` results came from: the problems whose reference answer is one
  of `final`'s `top` most frequent greedy answers (a policy that learned to guess a frequent answer gains
  there) against the rest. references: the problems' reference answers in order (`heldout_records`), matched
  to the replies' answers as strings.

  -> {"answers": the frequent answers, "frequent" / "rest": {"problems", "greedy": [correct before, after],
  and with avg@k in both "sampled": [summed solve rates before, after]}}."""
  answers = [answer for answer, _ in final["top_answers"][:top]]
  frequent = np.isin(np.asarray(references), answers)
  greedy = [np.array([c == "1" for c in r["per_problem"]]) for r in (init, final)]
  both = init.get("sampled") and final.get("sampled")
  rates = [np.divide(r["sampled"]["per_problem"], r["sampled"]["k"]) for r in (init, final)] if both else None
  out = {"answers": answers}
  for name, rows in (("frequent", frequent), ("rest", ~frequent)):
    out[name] = {"problems": int(rows.sum()), "greedy": [int(g[rows].sum()) for g in greedy]}
    if rates:
      out[name]["sampled"] = [float(r[rows].sum()) for r in rates]
  return out


def _format_points(change: dict) -> str:
  low, high = change["interval_95"]
  return f"{100 * change['change']:+.1f} points (95% CI {100 * low:+.1f} to {100 * high:+.1f})"


def format_change(change: dict) -> str:
  """ "+1.2 points (95% CI -0.4 to +2.8)" for `compare`'s result, then "; avg@8 +0.9 points (...)" when it
  has the sampled change."""
  line = _format_points(change)
  if change.get("sampled"):
    line += f"; avg@{change['sampled']['k']} {_format_points(change['sampled'])}"
  return line


def format_heldout(result: dict) -> str:
  """One line: accuracy with its interval, per-family accuracies, mean reply length, the most frequent answer."""
  families = ", ".join(f"{f} {a:.0%}" for f, a in result["by_family"].items())
  interval = result.get("interval_95")
  ci = f"95% CI {interval[0]:.1%}-{interval[1]:.1%}; " if interval else ""
  line = (f"held-out accuracy {result['accuracy']:.1%} ({ci}{result['correct']}/{result['count']}; {families}); "
          f"mean reply {result['mean_response_tokens']:.0f} tokens, {result['stopped_fraction']:.0%} stopped")
  if result["top_answers"]:
    answer, count = result["top_answers"][0]
    line += f"; most frequent answer {answer!r} in {count}/{result['count']}"
  sampled = result.get("sampled")
  if sampled:
    low, high = sampled["interval_95"]
    line += (f"; avg@{sampled['k']} (T={sampled['temperature']:g}) {sampled['accuracy']:.1%} "
             f"(95% CI {low:.1%}-{high:.1%}), pass@{sampled['k']} {sampled['pass_at_k']:.1%}")
  return line
