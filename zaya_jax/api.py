"""Functional entry points over the Zaya module: init, forward, decode state, prefill, decode_step, count_params.

All of them take `(params, config, ...)` with `config` a static (hashable) ZayaConfig, and are jitted once per
shape. Token ids are range-checked on the host when they are concrete arrays (inside a user's own `jax.jit`
they are tracers and the check is skipped; `jnp.take` would then clamp silently).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zaya_jax.config import ZayaConfig
from zaya_jax.model import Zaya


class InputError(ValueError):
  """Bad model input (token ids, masks, shapes, cache capacity)."""


def check_token_ids(input_ids, vocab_size: int):
  """Raises InputError naming the offending id if any token id lies outside [0, vocab_size)."""
  if isinstance(input_ids, jax.core.Tracer):
    return
  ids = np.asarray(input_ids)
  if not np.issubdtype(ids.dtype, np.integer):
    raise InputError(f"input_ids must be integers, got dtype {ids.dtype}")
  if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    where = tuple(int(i[0]) for i in np.nonzero((ids < 0) | (ids >= vocab_size)))
    raise InputError(f"token id {int(bad[0])} at index {where} is outside the vocabulary [0, {vocab_size})")


def _check_2d(name, x, shape=None):
  if x is None:
    return
  if getattr(x, "ndim", None) != 2 or (shape is not None and tuple(x.shape) != tuple(shape)):
    raise InputError(f"{name} must have shape [batch, seq] = {tuple(shape) if shape else '2-D'}, "
                     f"got {getattr(x, 'shape', None)}")


def check_expert_choices(expert_choices, shape, num_layers: int, num_experts: int):
  """Raises InputError unless expert_choices is an integer [B,S,L] = shape + (num_layers,) array with values in
  [-1, num_experts] (num_experts = the skip route, -1 = the router's own choice; values checked when concrete)."""
  want = tuple(shape) + (num_layers,)
  traced = isinstance(expert_choices, jax.core.Tracer)
  choices = expert_choices if traced else np.asarray(expert_choices)
  if tuple(choices.shape) != want:
    raise InputError(f"expert_choices must have shape [batch, seq, layers] = {want}, got {tuple(choices.shape)}")
  if not jnp.issubdtype(choices.dtype, jnp.integer):
    raise InputError(f"expert_choices must be integers, got dtype {choices.dtype}")
  if not traced and choices.size and (choices.min() < -1 or choices.max() > num_experts):
    bad = choices[(choices < -1) | (choices > num_experts)]
    raise InputError(f"expert choice {int(bad[0])} is outside [-1, {num_experts}] (-1 = the router's own, "
                     f"{num_experts} = skip)")


def segment_positions(segment_ids_BS):
  """Position of each token within its document (runs of equal segment id) -> [B,S] int32."""
  S = segment_ids_BS.shape[1]
  idx = jnp.arange(S, dtype=jnp.int32)[None]
  starts = jnp.concatenate([jnp.ones_like(segment_ids_BS[:, :1], bool),
                            segment_ids_BS[:, 1:] != segment_ids_BS[:, :-1]], axis=1)
  start_idx = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
  return idx - start_idx


def positions_from_mask(mask_BS, offset_B=None):
  """Generation positions under left padding: running count of real tokens - 1 (+ offset); padding -> 0."""
  mask = mask_BS.astype(jnp.int32)
  pos = jnp.cumsum(mask, axis=1) - 1
  if offset_B is not None:
    pos = pos + offset_B[:, None]
  return jnp.where(mask > 0, pos, 0).astype(jnp.int32)


def _ctx(B, S, positions, conv_mask=None, segment_ids=None, key_valid=None, q_slots=None, k_slots=None,
         write_index=None):
  slots = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
  return {
      "positions": positions.astype(jnp.int32),
      "conv_mask": conv_mask,
      "segment_ids": segment_ids,
      "key_segment_ids": segment_ids,
      "key_valid": key_valid if key_valid is not None else jnp.ones((B, S), bool),
      "q_slots": q_slots if q_slots is not None else slots,
      "k_slots": k_slots if k_slots is not None else jnp.arange(S, dtype=jnp.int32),
      "write_index": write_index,
  }


def init_params(config: ZayaConfig, rng):
  """Random parameters (transformers' init scheme: normal(initializer_range), norms/scales 1, biases 0)."""
  return _init(config, rng)


@functools.partial(jax.jit, static_argnums=0)
def _init(config, rng):
  ids = jnp.zeros((1, 1), jnp.int32)
  variables = Zaya(config).init(rng, ids, _ctx(1, 1, jnp.zeros((1, 1), jnp.int32)))
  return nn.meta.unbox(variables["params"])


def logical_axes(config: ZayaConfig):
  """The logical axis names of every parameter (a pytree of PartitionSpec), for sharding rules."""
  ids = jnp.zeros((1, 1), jnp.int32)
  abstract = jax.eval_shape(Zaya(config).init, jax.random.key(0), ids, _ctx(1, 1, jnp.zeros((1, 1), jnp.int32)))
  return nn.get_partition_spec(abstract["params"])


@functools.partial(jax.jit, static_argnames=("config", "return_aux"))
def _forward(params, config, input_ids, attention_mask, positions, segment_ids, return_aux, expert_choices=None):
  B, S = input_ids.shape
  if positions is None:
    positions = segment_positions(segment_ids) if segment_ids is not None else jnp.broadcast_to(
        jnp.arange(S, dtype=jnp.int32), (B, S))
  key_valid = attention_mask.astype(bool) if attention_mask is not None else None
  ctx = _ctx(B, S, positions, conv_mask=attention_mask, segment_ids=segment_ids, key_valid=key_valid)
  logits, _, aux = Zaya(config).apply({"params": params}, input_ids, ctx, expert_choices_BSL=expert_choices)
  return (logits, aux) if return_aux else logits


def forward(params, config: ZayaConfig, input_ids, attention_mask=None, *, positions=None, segment_ids=None,
            expert_choices=None, return_aux: bool = False):
  """Full-sequence forward pass -> logits [B,S,V] (in config.dtype).

  attention_mask [B,S] (1 = token, 0 = padding) is treated as transformers does: padding keys are hidden and
  padding tokens enter CCA as zeros; positions default to 0..S-1 (pass `positions_from_mask(mask)` for
  generation-style positions). segment_ids [B,S] pack several documents per row: attention, the q/k
  convolution and the delayed value do not cross documents, positions restart per document.
  With return_aux, also returns {"expert_index": [L,B,S] (num_experts = skip), "router_logits": [L,B,S,E+1]}.
  expert_choices [B,S,L] int (router replay): forces every (token, layer)'s route, e.g. the sampler's
  (`generate(..., record_routing=True)`) or `jnp.moveaxis(aux["expert_index"], 0, -1)`; -1 keeps the router's
  choice. The combine weight is the current router's probability of the forced route (the router still gets
  gradients); the balancing biases play no part.
  """
  check_token_ids(input_ids, config.vocab_size)
  _check_2d("input_ids", input_ids)
  for name, x in (("attention_mask", attention_mask), ("positions", positions), ("segment_ids", segment_ids)):
    _check_2d(name, x, input_ids.shape)
  if expert_choices is not None:
    check_expert_choices(expert_choices, input_ids.shape, config.num_hidden_layers, config.num_experts)
    expert_choices = jnp.asarray(expert_choices, jnp.int32)
  return _forward(params, config, jnp.asarray(input_ids), attention_mask, positions, segment_ids, return_aux,
                  expert_choices)


# Decode state ------------------------------------------------------------------------------------------------

def init_decode_state(config: ZayaConfig, batch_size: int, max_len: int, dtype=None):
  """Empty decode state for `batch_size` sequences of up to `max_len` tokens (prompt + generated).

  Per layer: keys/values [B,K,T,d] (keys after norm, temperature and RoPE), conv [B,P,C] (the last P raw
  pre-conv q/k vectors), delayed [B,K*d/2] (the last token's delayed value projection). Shared: kv_valid
  [B,T] (filled, non-padding slots), index (next slot), next_position [B].
  """
  dt = jnp.dtype(dtype or config.dtype)
  K, d = config.num_key_value_heads, config.head_dim

  def layer(*lead):
    return {"k": jnp.zeros((*lead, batch_size, K, max_len, d), dt),
            "v": jnp.zeros((*lead, batch_size, K, max_len, d), dt),
            "conv": jnp.zeros((*lead, batch_size, config.conv_context, config.conv_channels), dt),
            "delayed": jnp.zeros((*lead, batch_size, K * d // 2), dt)}

  state = {"layer_0": layer(), "kv_valid": jnp.zeros((batch_size, max_len), bool),
           "index": jnp.zeros((), jnp.int32), "next_position": jnp.zeros((batch_size,), jnp.int32)}
  if config.num_hidden_layers > 1:
    state["layers"] = layer(config.num_hidden_layers - 1)
  return state


@functools.partial(jax.jit, static_argnames=("config", "all_logits", "return_choices"))
def _extend(params, config, input_ids, state, attention_mask, all_logits, return_choices=False):
  B, S = input_ids.shape
  T = state["kv_valid"].shape[1]
  idx = state["index"]
  mask = attention_mask if attention_mask is not None else jnp.ones((B, S), jnp.int32)
  positions = positions_from_mask(mask, state["next_position"])
  key_valid = jax.lax.dynamic_update_slice(state["kv_valid"], mask.astype(bool), (0, idx))
  ctx = _ctx(B, S, positions, conv_mask=attention_mask, key_valid=key_valid,
             q_slots=jnp.broadcast_to(idx + jnp.arange(S, dtype=jnp.int32), (B, S)),
             k_slots=jnp.arange(T, dtype=jnp.int32), write_index=idx)
  cache = {k: v for k, v in state.items() if k in ("layer_0", "layers")}
  logits, new_cache, aux = Zaya(config).apply({"params": params}, input_ids, ctx, cache,
                                              last_logits_only=not all_logits)
  new_state = dict(new_cache, kv_valid=key_valid, index=idx + S,
                   next_position=state["next_position"] + jnp.sum(mask.astype(jnp.int32), axis=1))
  out = (logits if all_logits else logits[:, -1]), new_state
  # The routes are computed either way; left out of the outputs, XLA drops them.
  return (*out, jnp.moveaxis(aux["expert_index"], 0, -1)) if return_choices else out


def _check_capacity(state, S):
  T = state["kv_valid"].shape[1]
  index = state["index"]
  if not isinstance(index, jax.core.Tracer) and int(index) + S > T:
    raise InputError(f"decode state holds {T} tokens; {int(index)} are used and {S} more do not fit")


def prefill(params, config: ZayaConfig, input_ids, state, attention_mask=None, *, all_logits: bool = False,
            return_expert_choices: bool = False):
  """Runs a prompt (or a further chunk) through the model, filling the decode state.

  input_ids [B,S]; attention_mask [B,S] for left-padded prompts (positions then count real tokens, as in
  generation). Returns (logits [B,V] of the last position, or [B,S,V] with all_logits, new state), and with
  return_expert_choices the route of every token and layer [B,S,L] (num_experts = skip) third.
  """
  check_token_ids(input_ids, config.vocab_size)
  _check_2d("input_ids", input_ids)
  _check_2d("attention_mask", attention_mask, input_ids.shape)
  _check_capacity(state, input_ids.shape[1])
  return _extend(params, config, jnp.asarray(input_ids), state, attention_mask, all_logits, return_expert_choices)


def decode_step(params, config: ZayaConfig, token_ids, state, *, return_expert_choices: bool = False):
  """One generated token per sequence: token_ids [B] -> (logits [B,V], new state), and with
  return_expert_choices the token's route in every layer [B,L] (num_experts = skip) third."""
  check_token_ids(token_ids, config.vocab_size)
  if getattr(token_ids, "ndim", None) != 1:
    raise InputError(f"token_ids must have shape [batch], got {getattr(token_ids, 'shape', None)}")
  _check_capacity(state, 1)
  out = _extend(params, config, jnp.asarray(token_ids)[:, None], state, None, False, return_expert_choices)
  return (*out[:2], out[2][:, 0]) if return_expert_choices else out


# Parameter counts ----------------------------------------------------------------------------------------------

def count_params(config: ZayaConfig) -> dict[str, int]:
  """Parameter counts from shapes alone (jax.eval_shape, no allocation); the tied LM head counts once.

  total, non_embedding, active (per token with top-1 routing: one expert per layer) and active_non_embedding.
  The routers' balancing biases are buffers, not parameters, and are not counted.
  """
  abstract = jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))
  flat = jax.tree_util.tree_flatten_with_path(abstract)[0]
  total = sum(math.prod(leaf.shape) for path, leaf in flat
              if getattr(path[-1], "key", None) != "balancing_biases")
  embedding = config.vocab_size * config.hidden_size
  per_expert = 3 * config.hidden_size * config.moe_intermediate_size
  inactive = config.num_hidden_layers * (config.num_experts - 1) * per_expert
  return {"total": total, "non_embedding": total - embedding, "active": total - inactive,
          "active_non_embedding": total - inactive - embedding}
