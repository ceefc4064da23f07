"""Batched generation under one `jax.jit`: prefill, then a `jax.lax.while_loop` over decode steps.

No Python runs per token: the public `prefill` / `decode_step` are traced into the program (their host-side
checks skip tracers; the state's capacity is right by construction), and sampling, stop tokens and
per-sequence length limits all run inside the loop, which exits as soon as every sequence is done. One
compile per (prompt shape, max_new_tokens, Sampling, number of stop ids, prefill_chunk, record_routing); the
decode state holds exactly prompt length + max_new_tokens - 1 tokens. Long prompts can be prefilled in
fixed-size chunks (a `lax.scan`), which bounds the prefill's attention buffers by chunk x state length instead
of prompt length x state length.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zaya_jax import api
from zaya_jax.config import ZayaConfig


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Next-token rule, applied in this order (as transformers does): temperature, top-k, top-p, min-p.

  temperature 0 is greedy (argmax; the filters are then irrelevant). top_k 0, top_p 1 and min_p 0 turn the
  respective filter off. `vocab_limit` > 0 samples only ids below it (a tokenizer smaller than the model's
  padded vocabulary). Static under jit: each distinct Sampling compiles once.
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  min_p: float = 0.0
  vocab_limit: int = 0

  def __post_init__(self):
    if not self.temperature >= 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not (isinstance(self.top_k, int) and self.top_k >= 0):
      raise ValueError(f"top_k must be a non-negative int (0 = off), got {self.top_k!r}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
    if not 0 <= self.min_p <= 1:
      raise ValueError(f"min_p must lie in [0, 1], got {self.min_p}")
    if not (isinstance(self.vocab_limit, int) and self.vocab_limit >= 0):
      raise ValueError(f"vocab_limit must be a non-negative int (0 = whole vocabulary), got {self.vocab_limit!r}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0


GREEDY = Sampling(temperature=0.0)


class GenerateOutput(NamedTuple):
  """tokens [B, max_new_tokens] (pad_id after each sequence's end), lengths [B] (generated tokens, the stop
  token included), stopped [B] (True where a stop token ended the sequence, False where a length limit did).

  With `record_routing` (router replay), the route every token took in every layer (num_experts = skip):
  prompt_expert_choices [B, S, L] from the prefill and expert_choices [B, max_new_tokens, L], entry t from the
  decode step that fed generated token t back. -1 where no route was taken: prompt padding, tokens past a
  sequence's end, and a last token the loop never fed back (its route could only shape the logits after it).
  Laid side by side they are `forward`'s expert_choices for prompt + generated tokens. None without the flag.
  """
  tokens: jax.Array
  lengths: jax.Array
  stopped: jax.Array
  expert_choices: jax.Array | None = None
  prompt_expert_choices: jax.Array | None = None


def filter_logits(logits_BV, sampling: Sampling):
  """Temperature-scaled fp32 logits with the tokens that top-k / top-p / min-p exclude set to -inf."""
  logits = logits_BV.astype(jnp.float32) / sampling.temperature
  if sampling.top_k:
    kth = jax.lax.top_k(logits, min(sampling.top_k, logits.shape[-1]))[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if sampling.top_p < 1:
    sorted_desc = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # The smallest prefix holding top_p of the mass: a token is kept while the mass above it is < top_p (the
    # top token always is). Thresholding on its logit keeps exact ties with the last kept token as well.
    threshold = jnp.min(jnp.where(mass_before < sampling.top_p, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, -jnp.inf, logits)
  if sampling.min_p > 0:
    probs = jax.nn.softmax(logits, axis=-1)
    logits = jnp.where(probs < sampling.min_p * probs.max(-1, keepdims=True), -jnp.inf, logits)
  return logits


def argmax(x_BV):
  """jnp.argmax over the last axis (the first maximum; a NaN row gives the last id) as a max and a min-reduce:
  XLA:CPU's single-pass argmax reduce is ~7x slower at [8, 4096], a cost paid on every decode step."""
  V = x_BV.shape[-1]
  ids = jax.lax.broadcasted_iota(jnp.int32, x_BV.shape, x_BV.ndim - 1)
  first = jnp.min(jnp.where(x_BV == jnp.max(x_BV, axis=-1, keepdims=True), ids, V), axis=-1)
  return jnp.minimum(first, V - 1)


def sample_logits(key, logits_BV, sampling: Sampling):
  """One token per row [B] int32: argmax when greedy, else a draw from the filtered distribution (the Gumbel
  trick of jax.random.categorical, same draws)."""
  if sampling.vocab_limit:
    logits_BV = logits_BV[:, :sampling.vocab_limit]
  if sampling.greedy:
    return argmax(logits_BV)
  logits = filter_logits(logits_BV, sampling)
  return argmax(jax.random.gumbel(key, logits.shape, logits.dtype) + logits)


def _prefill_in_chunks(params, config, prompt_ids_BS, prompt_mask_BS, state, chunk: int, record_routing: bool):
  """Prefill as a scan over S/chunk chunks (S a multiple of chunk) -> (last logits [B,V], state), and with
  record_routing the routes [B,S,L] third."""
  B, S = prompt_ids_BS.shape
  split = lambda x: x.reshape(B, S // chunk, chunk).swapaxes(0, 1)  # [S/chunk, B, chunk]

  def step(state, chunk_ids_mask):
    ids, mask = chunk_ids_mask
    state_and_out = api.prefill(params, config, ids, state, attention_mask=mask,
                                return_expert_choices=record_routing)
    return state_and_out[1], (state_and_out[0], *state_and_out[2:])

  state, (logits, *choices) = jax.lax.scan(step, state, (split(prompt_ids_BS), split(prompt_mask_BS)))
  # [S/chunk, B, chunk, L] -> [B, S, L]
  return logits[-1], state, *(c.swapaxes(0, 1).reshape(B, S, -1) for c in choices)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "sampling", "pad_id", "prefill_chunk",
                                             "record_routing"))
def _generate(params, config, prompt_ids_BS, prompt_mask_BS, key, stop_BK, max_lengths_B, *, max_new_tokens,
              sampling, pad_id, prefill_chunk, record_routing=False):
  B, S = prompt_ids_BS.shape
  # The last sampled token is never fed back, so the state needs one slot less than prompt + new tokens.
  state = api.init_decode_state(config, B, S + max_new_tokens - 1)
  if prefill_chunk:
    logits, state, *prompt_choices = _prefill_in_chunks(params, config, prompt_ids_BS, prompt_mask_BS, state,
                                                        prefill_chunk, record_routing)
  else:
    logits, state, *prompt_choices = api.prefill(params, config, prompt_ids_BS, state,
                                                 attention_mask=prompt_mask_BS, return_expert_choices=record_routing)

  def emit(step, logits, tokens, lengths, done, stopped):
    token = sample_logits(jax.random.fold_in(key, step), logits, sampling)
    token = jnp.where(done, pad_id, token)
    tokens = tokens.at[:, step].set(token)
    lengths = lengths + (~done).astype(jnp.int32)
    hit = ~done & jnp.any(token[:, None] == stop_BK, axis=-1)
    return token, tokens, lengths, done | hit | (lengths >= max_lengths_B), stopped | hit

  tokens = jnp.full((B, max_new_tokens), pad_id, jnp.int32)
  zeros = jnp.zeros((B,), jnp.int32)
  token, tokens, lengths, done, stopped = emit(0, logits, tokens, zeros, max_lengths_B <= 0, zeros > 0)

  # Only with record_routing does the loop carry the routes [B, max_new_tokens, L] (-1 = not fed back).
  choices = [jnp.full((B, max_new_tokens, config.num_hidden_layers), -1, jnp.int32)] if record_routing else []

  def cond(carry):
    step, _, _, _, _, done, _, *_ = carry
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    step, token, state, tokens, lengths, done, stopped, *choices = carry
    logits, state, *fed = api.decode_step(params, config, token, state, return_expert_choices=record_routing)
    choices = [c.at[:, step - 1].set(f) for c, f in zip(choices, fed)]  # the routes of token step - 1
    token, tokens, lengths, done, stopped = emit(step, logits, tokens, lengths, done, stopped)
    return step + 1, token, state, tokens, lengths, done, stopped, *choices

  carry = (jnp.int32(1), token, state, tokens, lengths, done, stopped, *choices)
  _, _, _, tokens, lengths, _, stopped, *choices = jax.lax.while_loop(cond, body, carry)
  if not record_routing:
    return GenerateOutput(tokens, lengths, stopped)
  # Past each sequence's end the loop fed pad_id: no route of the sequence.
  generated = jnp.arange(max_new_tokens)[None, :, None] < lengths[:, None, None]
  in_prompt = (prompt_mask_BS if prompt_mask_BS is not None else jnp.ones((B, S), bool)).astype(bool)[..., None]
  return GenerateOutput(tokens, lengths, stopped, jnp.where(generated, choices[0], -1),
                        jnp.where(in_prompt, prompt_choices[0], -1))


def default_stop_tokens(config: ZayaConfig) -> tuple[int, ...]:
  """The config's eos id(s) (none if it has none)."""
  eos = config.eos_token_id
  return () if eos is None else tuple(eos) if isinstance(eos, tuple) else (eos,)


def _stop_array(stop_tokens, batch: int, vocab_size: int):
  """Stop ids as [B, K] int32, -1 = no stop id (never sampled); at least one column so shapes stay 2-D."""
  stop = np.asarray(stop_tokens, dtype=np.int64) if len(stop_tokens) else np.full((0,), -1)
  if stop.ndim == 1:
    stop = np.broadcast_to(stop, (batch, stop.shape[0]))
  if stop.ndim != 2 or stop.shape[0] != batch:
    raise api.InputError(f"stop_tokens must be [K] or [batch={batch}, K] (-1 = unused), got shape {stop.shape}")
  if np.any((stop < -1) | (stop >= vocab_size)):
    raise api.InputError(f"stop token ids must lie in [0, {vocab_size}) (or -1 for unused), got {stop.tolist()}")
  if stop.shape[1] == 0:
    stop = np.full((batch, 1), -1)
  return jnp.asarray(stop, jnp.int32)


def _check_mask(prompt_mask, shape):
  mask = np.asarray(prompt_mask)
  if mask.shape != tuple(shape):
    raise api.InputError(f"prompt_mask must have the prompt's shape {tuple(shape)}, got {mask.shape}")
  mask = mask.astype(bool)
  if not mask[:, -1].all():
    raise api.InputError("every prompt needs at least one token and must be left-padded (last column real)")
  if np.any(mask[:, :-1] & ~mask[:, 1:]):
    raise api.InputError("prompt_mask must be left padding: zeros, then ones, in every row")


def generate(params, config: ZayaConfig, prompt_ids, *, max_new_tokens: int, key=None, prompt_mask=None,
             sampling: Sampling = Sampling(), stop_tokens=None, max_lengths=None, pad_id: int | None = None,
             prefill_chunk: int = 0, record_routing: bool = False) -> GenerateOutput:
  """Samples up to `max_new_tokens` tokens after each prompt, all under one jit.

  Args:
    prompt_ids: [B, S] int token ids; left-padded when `prompt_mask` [B, S] (1 = token, 0 = padding) is given.
    max_new_tokens: size of the output buffer and the longest continuation (static: compiles once per value).
    key: PRNG key; same key -> same output. Not needed when `sampling` is greedy.
    sampling: temperature / top-k / top-p / min-p (`Sampling`; `GREEDY` for argmax).
    stop_tokens: ids that end a sequence (kept in its output): [K] for all rows or [B, K] per row, -1 unused.
      Defaults to the config's eos id(s); pass () to generate to the length limit.
    max_lengths: [B] per-sequence limits on new tokens (<= max_new_tokens; 0 generates nothing).
    pad_id: id written after a sequence ends; defaults to the config's pad id (or 0).
    prefill_chunk: > 0 prefills prompts longer than this in chunks of this many tokens; the prompt is then
      left-padded to a multiple of it (the decode state grows by under one chunk).
    record_routing: also return every token's route per layer (router replay; a separate compiled program,
      the default one carries no routes).
  Returns:
    GenerateOutput(tokens [B, max_new_tokens], lengths [B], stopped [B]; with record_routing expert_choices
    [B, max_new_tokens, L] and prompt_expert_choices [B, S, L]).
  """
  args, static = _prepare(params, config, prompt_ids, max_new_tokens, key, prompt_mask, sampling, stop_tokens,
                          max_lengths, pad_id, prefill_chunk, record_routing)
  out = _generate(*args, **static)
  if record_routing:  # drop the routes of the extra left padding a chunked prefill added
    out = out._replace(prompt_expert_choices=out.prompt_expert_choices[:, -np.shape(prompt_ids)[1]:])
  return out


def compiled_generate(params, config: ZayaConfig, prompt_ids, *, max_new_tokens: int, key=None, prompt_mask=None,
                      sampling: Sampling = Sampling(), stop_tokens=None, max_lengths=None,
                      pad_id: int | None = None, prefill_chunk: int = 0,
                      record_routing: bool = False) -> jax.stages.Compiled:
  """The compiled program `generate` runs for these arguments (its `.memory_analysis()` gives buffer sizes);
  taken from the jit cache when `generate` already ran on the same shapes."""
  args, static = _prepare(params, config, prompt_ids, max_new_tokens, key, prompt_mask, sampling, stop_tokens,
                          max_lengths, pad_id, prefill_chunk, record_routing)
  return _generate.lower(*args, **static).compile()


def _prepare(params, config, prompt_ids, max_new_tokens, key, prompt_mask, sampling, stop_tokens, max_lengths,
             pad_id, prefill_chunk, record_routing):
  """Host-side checks and defaults -> (positional args, static keyword args) of `_generate`."""
  api.check_token_ids(prompt_ids, config.vocab_size)
  prompt_ids = jnp.asarray(prompt_ids, jnp.int32)
  if prompt_ids.ndim != 2 or prompt_ids.shape[1] == 0:
    raise api.InputError(f"prompt_ids must be [batch, seq] with seq >= 1, got shape {prompt_ids.shape}")
  B = prompt_ids.shape[0]
  if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
    raise api.InputError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
  if prompt_mask is not None:
    _check_mask(prompt_mask, prompt_ids.shape)
    prompt_mask = jnp.asarray(prompt_mask, jnp.int32)
  if key is None:
    if not sampling.greedy:
      raise api.InputError("sampling with temperature > 0 needs a PRNG key (key=jax.random.key(seed))")
    key = jax.random.key(0)
  if max_lengths is None:
    max_lengths = np.full((B,), max_new_tokens)
  max_lengths = np.asarray(max_lengths)
  if max_lengths.shape != (B,) or np.any((max_lengths < 0) | (max_lengths > max_new_tokens)):
    raise api.InputError(f"max_lengths must be [batch={B}] with values in [0, {max_new_tokens}], "
                         f"got {max_lengths.tolist()}")
  stop = _stop_array(default_stop_tokens(config) if stop_tokens is None else stop_tokens, B, config.vocab_size)
  if pad_id is None:
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
  if not (isinstance(prefill_chunk, int) and prefill_chunk >= 0):
    raise api.InputError(f"prefill_chunk must be a non-negative int (0 = one pass), got {prefill_chunk!r}")
  S = prompt_ids.shape[1]
  if prefill_chunk >= S:
    prefill_chunk = 0  # the prompt fits in one chunk: a single pass
  if prefill_chunk:
    extra = -S % prefill_chunk  # more left padding: every chunk then has the same shape
    mask = prompt_mask if prompt_mask is not None else jnp.ones((B, S), jnp.int32)
    prompt_ids = jnp.pad(prompt_ids, ((0, 0), (extra, 0)), constant_values=pad_id)
    prompt_mask = jnp.pad(mask, ((0, 0), (extra, 0)))
  args = (params, config, prompt_ids, prompt_mask, key, stop, jnp.asarray(max_lengths, jnp.int32))
  return args, {"max_new_tokens": max_new_tokens, "sampling": sampling, "pad_id": int(pad_id),
                "prefill_chunk": prefill_chunk, "record_routing": bool(record_routing)}
