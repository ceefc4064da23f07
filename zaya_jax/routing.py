"""The ZAYA router as a pure function of its parameters (ZAYA1.md §3.6; the model's Router module calls it)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zaya_jax import layers as L

F32 = jnp.float32


def route(x_ND, carry_NR, params, *, eps: float, use_eda: bool):
  """Top-1 routing over experts + the skip route -> (choice [N] int32, weight [N], logits [N,C], carry [N,R]).

  x_ND [N,D] in the activation dtype; carry_NR [N,R] is the previous block's router state (ignored, may be
  None, without EDA). params: down_proj_kernel [D,R], down_proj_bias [R], router_states_scale [R] (EDA only),
  norm {"weight" [R]}, fc1_kernel/fc2_kernel [R,R], fc1_bias/fc2_bias [R], out_proj_kernel [R,C],
  balancing_biases [C] (fp32). The biases only move the argmax (lowest index on ties) and get no gradient;
  the combine weight is the unbiased probability; the returned carry is the post-EDA, pre-norm vector.
  """
  dt = x_ND.dtype
  h = L.linear(x_ND, params["down_proj_kernel"], params["down_proj_bias"], dt=dt)
  if use_eda:
    h = h + carry_NR.astype(dt) * params["router_states_scale"].astype(dt)
  n = L.rms_norm(h, params["norm"]["weight"], eps)
  g = jax.nn.gelu(L.linear(n, params["fc1_kernel"], params["fc1_bias"], dt=dt), approximate=False)
  g = jax.nn.gelu(L.linear(g, params["fc2_kernel"], params["fc2_bias"], dt=dt), approximate=False)
  logits = L.linear(g, params["out_proj_kernel"], dt=dt)
  choice, weight = select_top1(logits, params["balancing_biases"])
  return choice, weight, logits, h


def select_top1(logits_NC, balancing_biases_C):
  """softmax, then argmax of fp32(probs) + biases (lowest index on ties; no gradient through the choice)
  -> (choice [N] int32, weight [N] = the chosen unbiased probability, in the logits' dtype)."""
  probs = jax.nn.softmax(logits_NC.astype(F32), axis=-1).astype(logits_NC.dtype)
  biased = jax.lax.stop_gradient(probs).astype(F32) + jax.lax.stop_gradient(balancing_biases_C.astype(F32))
  choice = jnp.argmax(biased, axis=-1)
  weight = jnp.take_along_axis(probs, choice[..., None], axis=-1)[..., 0]
  return choice.astype(jnp.int32), weight


def force_top1(logits_NC, choice_N, forced_N):
  """Router replay: forced [N] int32 in [-1, C) replaces the router's choice [N] where it is >= 0 (-1 keeps the
  router's own) -> (choice [N] int32, weight [N]). The weight is the current unbiased probability of that
  class, computed as in `select_top1`, so the router still gets the gradient of the combine weight; the
  balancing biases only move an argmax and play no part in a forced choice."""
  choice = jnp.where(forced_N >= 0, forced_N, choice_N).astype(jnp.int32)
  probs = jax.nn.softmax(logits_NC.astype(F32), axis=-1).astype(logits_NC.dtype)
  return choice, jnp.take_along_axis(probs, choice[..., None], axis=-1)[..., 0]


def linear_route(x_ND, params):
  """Ablation baseline: a single linear layer over experts + skip (no EDA, norm or MLP), same selection.
  params: linear_kernel [D,C], balancing_biases [C] -> (choice [N], weight [N], logits [N,C])."""
  logits = L.linear(x_ND, params["linear_kernel"], dt=x_ND.dtype)
  return (*select_top1(logits, params["balancing_biases"]), logits)
