"""Markovian Recursive Self-Aggregation (ZAYA1-8B report §VI-A) and Delethink chunked rollouts.

Round 0 samples N rollouts of the question, each with a budget of β new tokens. Each of the T later rounds
builds N aggregation prompts, each holding the question and the last τ tokens (the tail) of C distinct
candidates drawn uniformly without replacement from the previous round, and samples N new rollouts from them.
Rounds are numbered 0..T, so T aggregation rounds make T+1 generation stages of N rollouts.

Conventions (the spec leaves them open): a tail is the last τ tokens of everything the rollout generated
(reasoning and any answer), its stop token excluded; the N draws of C candidates are independent of each
other; C=1 is parallel Delethink-style continuation: rollout i continues its *own* tail, appended to the
question prompt, with no aggregation wording; τ >= β forwards whole rollouts (full-chain RSA); T=0 is N
independent samples.

Memory is bounded by construction: every aggregation round runs the same compiled `generate` on prompts
left-padded to one width (question + template + C·τ), so the decode state holds question + C·τ + β tokens
per sequence whatever T is (the final round: its final budget instead of β); with `Delethink` chunking it
holds prompt + keep_head + chunk_size whatever β is.
Rounds and chunks are driven from Python (a handful of calls); every token is generated inside the compiled
loop. Round and chunk keys are derived with `fold_in`, so results are deterministic given the key.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Sequence

import jax
import numpy as np

from zaya_jax.config import ZayaConfig
from zaya_jax.data.tokenizer import Tokenizer
from zaya_jax.sampling.chat import ChatTemplate, Segment
from zaya_jax.sampling.generation import Sampling, default_stop_tokens, generate


class RSAConfigError(ValueError):
  """Inconsistent RSA or Delethink parameters."""


@dataclasses.dataclass(frozen=True)
class Delethink:
  """Chunked generation of one rollout (Markovian Thinker): the context is reset at every chunk boundary.

  The first chunk generates up to `chunk_size` tokens after the prompt; every later chunk starts from the
  prompt + the first `keep_head` tokens of the rollout + its last `carry` tokens, and generates up to
  `chunk_size - carry` more, until a stop token or the rollout's budget.
  """
  chunk_size: int
  carry: int
  keep_head: int = 0

  def __post_init__(self):
    if not 0 <= self.carry < self.chunk_size:
      raise RSAConfigError(f"need 0 <= carry < chunk_size, got carry={self.carry}, chunk_size={self.chunk_size}")
    if self.keep_head < 0 or self.keep_head + self.carry > self.chunk_size:
      raise RSAConfigError(f"need 0 <= keep_head and keep_head + carry <= chunk_size, got keep_head="
                           f"{self.keep_head}, carry={self.carry}, chunk_size={self.chunk_size}")


@dataclasses.dataclass(frozen=True)
class AggregationTemplate:
  """The user message of an aggregation prompt: header, question, then each tail after its label, footer.

  `candidate` is formatted with `i` (1-based). The default paraphrases the RSA paper's prompt (spec §2.2)
  with candidates replaced by tails, as the ZAYA1 report describes; the exact ZAYA1 wording is unpublished.
  """
  header: str = ("You are given a problem and the final part of several candidate solutions. Some of them "
                 "may be incomplete or wrong. Weigh the useful ideas, pick the correct line of reasoning, and "
                 "write one improved solution. End with the final answer in \\boxed{}.\n\nProblem:\n")
  intro: str = "\n\nCandidate solutions (endings only; they may contain mistakes):"
  candidate: str = "\n---- Solution {i} ----\n"
  footer: str = ("\n\nNow write one improved, complete solution with clear reasoning and the final answer in "
                 "\\boxed{}.")

  def segments(self, question: str, tails: Sequence[Sequence[int]]) -> list[Segment]:
    out: list[Segment] = [self.header + question + self.intro]
    for i, tail in enumerate(tails):
      out += [self.candidate.format(i=i + 1), list(tail)]
    return out + [self.footer]


@dataclasses.dataclass(frozen=True)
class PromptBuilder:
  """Token ids of the question prompt, of aggregation prompts and of continuation prompts for one question."""
  tokenizer: Tokenizer
  chat_template: ChatTemplate
  question: str
  template: AggregationTemplate = AggregationTemplate()

  def initial(self) -> list[int]:
    return self.chat_template.user_prompt(self.tokenizer, [self.question])

  def aggregation(self, tails: Sequence[Sequence[int]]) -> list[int]:
    return self.chat_template.user_prompt(self.tokenizer, self.template.segments(self.question, tails))

  def continuation(self, tail: Sequence[int]) -> list[int]:
    """C=1: the question prompt with the rollout's own tail as the start of the reply."""
    return self.initial() + [int(t) for t in tail]


@dataclasses.dataclass(frozen=True)
class RSAConfig:
  """population N, candidates C (per aggregation prompt), rounds T (aggregation rounds after round 0),
  budget β (new tokens per rollout), tail τ (tokens forwarded per candidate; τ >= β forwards everything),
  final_budget (new tokens per rollout of round T, the final responses; default β). prefill_chunk > 0
  prefills prompts in chunks of that many tokens (bounds prefill attention memory for long aggregation
  prompts; see `generate`)."""
  population: int
  candidates: int
  rounds: int
  budget: int
  tail: int
  final_budget: int | None = None
  sampling: Sampling = Sampling()
  chunking: Delethink | None = None
  prefill_chunk: int = 0

  def __post_init__(self):
    for name in ("population", "candidates", "budget", "tail"):
      if getattr(self, name) < 1:
        raise RSAConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.final_budget is not None and self.final_budget < 1:
      raise RSAConfigError(f"final_budget must be >= 1 (or None = budget), got {self.final_budget}")
    if self.rounds < 0:
      raise RSAConfigError(f"rounds must be >= 0, got {self.rounds}")
    if self.candidates > self.population:
      raise RSAConfigError(f"C={self.candidates} distinct candidates cannot be drawn from N={self.population}")


@dataclasses.dataclass
class Rollouts:
  """tokens [B, budget] (pad after each end), lengths [B] (stop token included), stopped [B] (host arrays);
  expert_choices [B, width + budget, L]: the route of every prompt | generated token per layer, -1 where none
  was taken (`GenerateOutput`), only from `rollout(..., record_routing=True)`."""
  tokens: np.ndarray
  lengths: np.ndarray
  stopped: np.ndarray
  expert_choices: np.ndarray | None = None

  def trace(self, b: int) -> list[int]:
    return self.tokens[b, :self.lengths[b]].tolist()

  def tail(self, b: int, size: int) -> list[int]:
    """The last `size` generated tokens of row b, its stop token excluded."""
    end = int(self.lengths[b]) - int(self.stopped[b])
    return self.tokens[b, max(0, end - size):end].tolist()


@dataclasses.dataclass
class RoundResult:
  """One stage: prompts (token ids), candidates [N, C] (indices into the previous round; None in round 0),
  the rollouts, and each rollout's tail (what the next round forwards)."""
  index: int
  prompts: list[list[int]]
  candidates: np.ndarray | None
  rollouts: Rollouts
  tails: list[list[int]]


def left_pad(prompts: Sequence[Sequence[int]], width: int, pad_id: int):
  """Prompts right-aligned in a [B, width] int32 array, and the matching mask (1 = token)."""
  ids = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for b, prompt in enumerate(prompts):
    if not 0 < len(prompt) <= width:
      raise RSAConfigError(f"prompt {b} has {len(prompt)} tokens; it must hold 1..{width}")
    ids[b, width - len(prompt):] = prompt
    mask[b, width - len(prompt):] = 1
  return ids, mask


def rollout(params, config: ZayaConfig, prompts: Sequence[Sequence[int]], *, budget: int, key,
            sampling: Sampling = Sampling(), chunking: Delethink | None = None, width: int | None = None,
            stop_tokens=None, pad_id: int = 0, prefill_chunk: int = 0, record_routing: bool = False) -> Rollouts:
  """Up to `budget` new tokens after each prompt, in one `generate` call or as a Delethink chunked trace.

  `width` (>= the longest prompt) fixes the padded prompt length, so calls with different prompts share one
  compiled program. With `chunking`, the decode state holds width + keep_head + chunk_size tokens, whatever
  `budget` is; the trace is assembled on the host. record_routing (router replay; not with `chunking`, whose
  chunks see other contexts than the whole trace) also returns the routes of prompt | generated tokens.
  """
  if record_routing and chunking is not None:
    raise RSAConfigError("record_routing needs a single generate call (chunking=None)")
  width = width or max(len(p) for p in prompts)
  ids, mask = left_pad(prompts, width, pad_id)
  stop = default_stop_tokens(config) if stop_tokens is None else stop_tokens

  def gen(ids, mask, new, key, max_lengths=None):
    return generate(params, config, ids, prompt_mask=mask, max_new_tokens=new, key=key, sampling=sampling,
                    stop_tokens=stop, max_lengths=max_lengths, pad_id=pad_id, prefill_chunk=prefill_chunk,
                    record_routing=record_routing)

  if chunking is None:
    out = gen(ids, mask, budget, key)
    choices = (np.concatenate([np.asarray(out.prompt_expert_choices), np.asarray(out.expert_choices)], axis=1)
               if record_routing else None)
    return Rollouts(np.asarray(out.tokens), np.asarray(out.lengths), np.asarray(out.stopped), choices)

  B = len(prompts)
  result = Rollouts(np.full((B, budget), pad_id, np.int32), np.zeros(B, np.int64), np.zeros(B, bool))

  def append(out):
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for b, n in enumerate(lengths):
      result.tokens[b, result.lengths[b]:result.lengths[b] + n] = tokens[b, :n]
    result.lengths += lengths
    result.stopped |= np.asarray(out.stopped)

  append(gen(ids, mask, min(chunking.chunk_size, budget), jax.random.fold_in(key, 0)))
  step = chunking.chunk_size - chunking.carry
  chunk = 1
  while not np.all(result.stopped | (result.lengths >= budget)):
    contexts = [list(prompts[b]) + result.tokens[b, :min(chunking.keep_head, result.lengths[b])].tolist()
                + result.tail(b, chunking.carry) for b in range(B)]
    ids, mask = left_pad(contexts, width + chunking.keep_head + chunking.carry, pad_id)
    limits = np.where(result.stopped, 0, np.clip(budget - result.lengths, 0, step))
    append(gen(ids, mask, step, jax.random.fold_in(key, chunk), max_lengths=limits))
    chunk += 1
  return result


def draw_candidates(key, population: int, candidates: int) -> np.ndarray:
  """[N, C] indices: row i holds C distinct members of the previous population, rows drawn independently.
  C=1 maps every rollout to itself (continuation of its own tail)."""
  if candidates == 1:
    return np.arange(population)[:, None]
  keys = jax.random.split(key, population)
  draw = jax.vmap(lambda k: jax.random.choice(k, population, (candidates,), replace=False))
  return np.asarray(draw(keys))


def markovian_rsa(params, config: ZayaConfig, prompts: PromptBuilder, rsa: RSAConfig, key, *,
                  stop_tokens=None, pad_id: int = 0) -> Iterator[RoundResult]:
  """Yields rounds 0..T of Markovian RSA as each finishes (`list(...)` keeps them all).

  Round r uses `fold_in(key, r)`: its first split draws the candidates, its second samples the rollouts.
  The last round (round 0 when T=0) gets `final_budget` new tokens per rollout, the others `budget`.
  """
  N, C, tau = rsa.population, rsa.candidates, rsa.tail
  # Every aggregation round pads to the longest possible prompt (tails are spliced verbatim, at most
  # min(τ, β) tokens each): one compiled shape for all T rounds.
  dummy_tails = [[pad_id] * min(tau, rsa.budget)] * C
  agg_width = len(prompts.continuation(dummy_tails[0]) if C == 1 else prompts.aggregation(dummy_tails))
  tails = None
  for r in range(rsa.rounds + 1):
    draw_key, sample_key = jax.random.split(jax.random.fold_in(key, r))
    if r == 0:
      chosen, round_prompts, width = None, [prompts.initial()] * N, None
    else:
      chosen = draw_candidates(draw_key, N, C)
      round_prompts = [prompts.continuation(tails[i]) if C == 1 else prompts.aggregation([tails[j] for j in row])
                       for i, row in enumerate(chosen)]
      width = agg_width
    budget = rsa.final_budget if r == rsa.rounds and rsa.final_budget else rsa.budget
    result = rollout(params, config, round_prompts, budget=budget, key=sample_key, sampling=rsa.sampling,
                     chunking=rsa.chunking, width=width, stop_tokens=stop_tokens, pad_id=pad_id,
                     prefill_chunk=rsa.prefill_chunk)
    tails = [result.tail(b, tau) for b in range(N)]
    yield RoundResult(r, round_prompts, chosen, result, tails)


def majority_vote(answers: Sequence[str | None]) -> str | None:
  """The most frequent non-None answer (ties: the one seen first), or None if there is none."""
  counts = collections.Counter(a for a in answers if a is not None)
  return max(counts, key=counts.__getitem__) if counts else None
