"""Evaluation runs: single-rollout and Markovian RSA sampling over a benchmark, graded and scored.

Single rollout is Markovian RSA with T=0 (k independent samples), so both modes share one driver,
`batched_rsa`, which runs several problems at once (rows = problems x N). Every round pads its prompts to one
width for the whole benchmark (`round_widths`: the longest question prompt for round 0, the longest
aggregation prompt for later rounds) and the last batch is filled up with copies of its last problem, so a
benchmark compiles one program per round kind whatever its problems' lengths (a compile of even the toy
model takes seconds on CPU). With one problem per batch a problem's rounds are exactly
`markovian_rsa(..., key=fold_in(key(seed), problem index))`; with more, a batch samples with its first
problem's round keys, so results depend (deterministically) on the batching.

Token accounting (ZAYA1, spec §4.3): generated tokens only (each rollout's stop token included), summed over
the N rollouts of every round; prompts, aggregation prefill and copied tails are not counted.

Per-problem records (`evaluate`, one JSON object per problem):
  {"id", "gold", "tags", "generated_tokens" (all rounds), "texts" (final round, if kept),
   "rounds": [{"round", "tokens" [N], "stopped" [N], "answers" [N] (null: none extracted), "correct" [N],
               "clusters" [N] (majority-vote cluster labels; null for code), "status" [N] (code only),
               "aggregated" [N][C] (indices into the previous round; rounds >= 1)}]}
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np

from zaya_jax.config import ZayaConfig
from zaya_jax.data.tokenizer import Tokenizer
from zaya_jax.evaluation import metrics, scoring
from zaya_jax.evaluation.benchmarks import Problem
from zaya_jax.evaluation.presets import Preset
from zaya_jax.sampling import (AggregationTemplate, ChatTemplate, PromptBuilder, RoundResult, Rollouts, RSAConfig,
                               draw_candidates, reply_stop_tokens, rollout)
from zaya_jax.sampling.chat import Segment


class PlainTemplate:
  """Completion prompts in the built-in corpus' document format, `<bos>Problem: {message}\\nSolution:`, for
  pretrained models that never saw a chat template. Such a model rarely ends its document: it goes on with
  a new "Problem:" of its own, so its answer is read from the text before `STOP_TEXT` (`evaluate`'s
  `truncate_at`)."""

  STOP_TEXT = "\nProblem:"

  def user_prompt(self, tokenizer: Tokenizer, segments: Sequence[Segment]) -> list[int]:
    ids = [tokenizer.bos_id] + tokenizer.encode("Problem: ")
    for segment in segments:
      ids += tokenizer.encode(segment) if isinstance(segment, str) else [int(t) for t in segment]
    return ids + tokenizer.encode("\nSolution:")


def round_widths(builders: Sequence[PromptBuilder], rsa: RSAConfig) -> tuple[int, int]:
  """(round-0 width, aggregation-round width): the longest question prompt and the longest aggregation
  prompt (C=1: continuation prompt) over `builders`, tails at their longest, min(τ, β) tokens."""
  tail = [0] * min(rsa.tail, rsa.budget)

  def later(b: PromptBuilder) -> list[int]:
    return b.continuation(tail) if rsa.candidates == 1 else b.aggregation([tail] * rsa.candidates)

  return max(len(b.initial()) for b in builders), max(len(later(b)) for b in builders)


def batched_rsa(params, config: ZayaConfig, builders: Sequence[PromptBuilder], rsa: RSAConfig, keys, *,
                widths: tuple[int, int], stop_tokens, pad_id: int = 0) -> Iterator[list[RoundResult]]:
  """Markovian RSA (as `markovian_rsa`) for several questions in one batch: yields, for each round 0..T, one
  RoundResult per question. Question p draws its candidates with its own key `keys[p]`; all rows sample with
  the first question's key. `widths` as `round_widths` returns (at least as wide)."""
  N, C, tau = rsa.population, rsa.candidates, rsa.tail
  tails = None
  for r in range(rsa.rounds + 1):
    round_keys = [jax.random.split(jax.random.fold_in(key, r)) for key in keys]
    if r == 0:
      chosen = [None] * len(builders)
      prompts = [[b.initial()] * N for b in builders]
    else:
      chosen = [draw_candidates(k[0], N, C) for k in round_keys]
      prompts = [[b.continuation(t[i]) if C == 1 else b.aggregation([t[j] for j in row])
                  for i, row in enumerate(rows)] for b, t, rows in zip(builders, tails, chosen)]
    budget = rsa.final_budget if r == rsa.rounds and rsa.final_budget else rsa.budget
    out = rollout(params, config, [p for group in prompts for p in group], budget=budget, key=round_keys[0][1],
                  sampling=rsa.sampling, chunking=rsa.chunking, width=widths[r > 0], stop_tokens=stop_tokens,
                  pad_id=pad_id, prefill_chunk=rsa.prefill_chunk)
    results = []
    for p, group in enumerate(prompts):
      rows = slice(p * N, (p + 1) * N)
      part = Rollouts(out.tokens[rows], out.lengths[rows], out.stopped[rows])
      results.append(RoundResult(r, group, chosen[p], part, [part.tail(b, tau) for b in range(N)]))
    tails = [result.tails for result in results]
    yield results


def _grade_all(kind: str, problem: Problem, texts: Sequence[str]) -> list[scoring.Graded]:
  if kind == "code":  # subprocesses: grade in parallel (run_tests is thread-safe)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
      return list(pool.map(lambda text: scoring.grade(kind, problem, text), texts))
  return [scoring.grade(kind, problem, text) for text in texts]  # Math-Verify's timeouts need the main thread


def _round_record(kind: str, problem: Problem, result: RoundResult, texts: Sequence[str]) -> dict:
  graded = _grade_all(kind, problem, texts)
  equivalent = scoring.equivalence(kind)
  answers = [g.answer for g in graded]
  record = {"round": result.index, "tokens": result.rollouts.lengths.tolist(),
            "stopped": result.rollouts.stopped.tolist(), "answers": answers,
            "correct": [g.correct for g in graded],
            "clusters": scoring.cluster(answers, equivalent) if equivalent else None}
  if kind == "code":
    record["status"] = [g.status for g in graded]
  if result.candidates is not None:
    record["aggregated"] = np.asarray(result.candidates).tolist()
  return record


def evaluate(model, kind: str, problems: Sequence[Problem], preset: Preset, *, seed: int = 0,
             problems_per_batch: int = 1, template: ChatTemplate | None = None,
             aggregation: AggregationTemplate = AggregationTemplate(), rsa_fields: dict | None = None,
             truncate_at: str | None = None, keep_texts: bool = True,
             progress: Callable[[str], None] | None = None) -> list[dict]:
  """Samples and grades every problem under `preset`; returns one record per problem (module docstring).

  model: anything with params, config, tokenizer and chat_template (a `zaya_jax.loading.LoadedModel`).
  kind: the benchmark family ("math", "multiple_choice", "code"). template: the prompt template (default the
  model's chat template; `PlainTemplate()` for pretrained-only models). rsa_fields: extra RSAConfig fields
  (chunking, prefill_chunk). truncate_at: grade only the text before its first occurrence (token counts,
  tails and kept texts are whole). Problem i samples with key fold_in(key(seed), i) (module docstring).
  """
  if not problems:
    raise ValueError("no problems to evaluate")
  if problems_per_batch < 1:
    raise ValueError(f"problems_per_batch must be >= 1, got {problems_per_batch}")
  tokenizer, config = model.tokenizer, model.config
  sampling = dataclasses.replace(preset.sampling, vocab_limit=min(tokenizer.vocab_size, config.vocab_size))
  rsa = dataclasses.replace(preset, sampling=sampling).rsa_config(**(rsa_fields or {}))
  builders = [PromptBuilder(tokenizer, template or model.chat_template, p.question, aggregation) for p in problems]
  widths = round_widths(builders, rsa)
  stop = reply_stop_tokens(config, tokenizer)
  base = jax.random.key(seed)
  records = [{"id": p.id, "gold": p.answer, "tags": p.tags, "generated_tokens": 0, "rounds": []} for p in problems]
  for start in range(0, len(problems), problems_per_batch):
    batch = list(range(start, min(start + problems_per_batch, len(problems))))
    filled = batch + [batch[-1]] * (problems_per_batch - len(batch))  # one batch shape: one compile
    begin = time.perf_counter()
    for results in batched_rsa(model.params, config, [builders[i] for i in filled], rsa,
                               [jax.random.fold_in(base, i) for i in filled], widths=widths, stop_tokens=stop,
                               pad_id=config.pad_token_id or 0):
      for i, result in zip(batch, results):
        texts = [tokenizer.decode(result.rollouts.trace(b)) for b in range(rsa.population)]
        graded = [text.split(truncate_at, 1)[0] for text in texts] if truncate_at else texts
        records[i]["rounds"].append(_round_record(kind, problems[i], result, graded))
        records[i]["generated_tokens"] += int(result.rollouts.lengths.sum())
        if keep_texts and result.index == rsa.rounds:
          records[i]["texts"] = texts
      if progress:
        done = [records[i]["rounds"][-1] for i in batch]
        accuracy = np.mean([np.mean(r["correct"]) for r in done])
        tokens = sum(sum(r["tokens"]) for r in done)
        progress(f"problems {start + 1}-{batch[-1] + 1}/{len(problems)} round {results[0].index}/{rsa.rounds}: "
                 f"{time.perf_counter() - begin:.1f}s, {tokens} tokens generated, accuracy {accuracy:.1%}")
  return records


def problem_scores(round_record: dict, ks: Sequence[int] = (1,)) -> dict[str, float]:
  """Scores of one problem from one round's n samples: avg@n, pass@k for k in `ks` (k <= n), and, when the
  answers are clustered, maj@k for k = n and k > 1 in `ks`."""
  correct = round_record["correct"]
  n, c = len(correct), int(sum(correct))
  ks = sorted({k for k in ks if k <= n})
  scores = {f"avg@{n}": c / n}
  scores.update({f"pass@{k}": metrics.pass_at_k(n, c, k) for k in ks})
  labels = round_record["clusters"]
  if labels is not None:
    first = {}
    for label, ok in zip(labels, correct):
      if label is not None:
        first.setdefault(label, ok)  # a cluster is as correct as its first member (its representative)
    sizes = [labels.count(label) for label in first]
    for k in sorted({k for k in ks if k > 1} | {n}):
      scores[f"maj@{k}"] = metrics.majority_at_k(sizes, list(first.values()), labels.count(None), k)
  return scores


def summarize(records: Sequence[dict], *, round_index: int = -1, ks: Sequence[int] = (1,),
              resamples: int = 1000, seed: int = 0) -> dict:
  """Benchmark scores (percent, with percentile-bootstrap 95% intervals over problems) of the samples of
  round `round_index` (default the final round), the per-round curve of accuracy against cumulative
  generated tokens per problem, the generated tokens per problem up to that round and per sample in it."""
  if not records:
    raise ValueError("no records to summarize")
  per_problem = [problem_scores(r["rounds"][round_index], ks) for r in records]
  names = [name for name in per_problem[0] if all(name in s for s in per_problem)]
  scores = {}
  for name in names:
    estimate = metrics.bootstrap_ci([s[name] for s in per_problem], resamples=resamples, seed=seed)
    scores[name] = {key: round(100 * value, 2) for key, value in estimate._asdict().items()}
  rounds = len(records[0]["rounds"])
  cumulative = np.cumsum([[sum(r["rounds"][t]["tokens"]) for t in range(rounds)] for r in records], axis=1)
  curve = [{"round": t, "tokens_per_problem": float(cumulative[:, t].mean()),
            "avg": round(100 * float(np.mean([np.mean(r["rounds"][t]["correct"]) for r in records])), 2)}
           for t in range(rounds)]
  index = range(rounds)[round_index]
  return {"problems": len(records), "round": index, "scores": scores, "curve": curve,
          "generated_tokens_per_problem": float(cumulative[:, index].mean()),
          "tokens_per_sample": float(np.mean([np.mean(r["rounds"][index]["tokens"]) for r in records]))}
