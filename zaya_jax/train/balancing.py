"""Router load balancing: the auxiliary-loss-free bias rule driven by AdamW (ZAYA1.md §5).

Each MoE block selects argmax_j(p_j + beta_j) over E experts plus the skip route (class E). After every training
step the per-layer load error drives beta through an AdamW update, so over-used experts are biased down and
under-used ones up (k = update count, all arrays [L, E+1] fp32):

  g_k = f_k - target;  m_k = b1 m + (1 - b1) g_k;  v_k = b2 v + (1 - b2) g_k^2;
  beta <- beta (1 - rate * wd) - rate * (m_k / (1 - b1^k)) / (sqrt(v_k / (1 - b2^k)) + eps).

`f` is the load fraction of the batch the step saw. Inside a jitted, data-parallel step the counts are sums
over the global batch, which is what the report specifies.

The skip route (spec §5 lists the known treatments; Zyphra's is unpublished), `skip_mode`:
  "experts" (default)  f over the E real experts among the tokens not skipped, target 1/E; beta_skip is never
                       changed (it keeps its init of -1). This is the report's formula (g = f - 1/E with E = 16),
                       the update sums to zero over experts so it cannot drift the experts' biases relative to
                       the skip class, and the skip rate stays whatever the learned router logits make it: the
                       skip route exists to let the router spend less compute on easy tokens, and forcing it to
                       1/(E+1) of the tokens would impose an arbitrary compute budget.
  "all"                f over all E+1 classes, target 1/(E+1), beta_skip updated too: the AMD Primus
                       Megatron port's choice (reproduces that reconstruction).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

SKIP_MODES = ("experts", "all")


class BalancingState(NamedTuple):
  """AdamW moments of the load error: m, v [L, E+1] fp32, and the update count."""
  m: jax.Array
  v: jax.Array
  count: jax.Array


def get_biases(params) -> jax.Array:
  """The routers' balancing biases of all L blocks stacked -> [L, E+1] fp32 (block 0 first)."""
  first = params["layer_0"]["mlp"]["gate"]["balancing_biases"][None]
  if "layers" not in params:
    return first
  return jnp.concatenate([first, params["layers"]["mlp"]["gate"]["balancing_biases"]], axis=0)


def set_biases(params, biases_LC):
  """A copy of `params` whose balancing biases are `biases_LC` [L, E+1] (the inverse of get_biases)."""
  def with_bias(block, value):
    gate = dict(block["mlp"]["gate"], balancing_biases=value)
    return dict(block, mlp=dict(block["mlp"], gate=gate))

  new = dict(params, layer_0=with_bias(params["layer_0"], biases_LC[0]))
  if "layers" in params:
    new["layers"] = with_bias(params["layers"], biases_LC[1:])
  return new


def init_balancing(num_layers: int, num_experts: int) -> BalancingState:
  shape = (num_layers, num_experts + 1)
  return BalancingState(m=jnp.zeros(shape, jnp.float32), v=jnp.zeros(shape, jnp.float32),
                        count=jnp.zeros((), jnp.int32))


def expert_counts(expert_index_LBS, token_mask_BS, num_experts: int) -> jax.Array:
  """Tokens routed to each class per layer -> [L, E+1] fp32 (class E = skip); masked-out tokens not counted."""
  weights = token_mask_BS.astype(jnp.float32).reshape(-1)
  count = lambda idx_BS: jnp.bincount(idx_BS.reshape(-1), weights=weights, length=num_experts + 1)
  return jax.vmap(count)(expert_index_LBS)


def load_error(counts_LC, skip_mode: str) -> jax.Array:
  """The pseudo-gradient g = f - target per layer and class -> [L, E+1] (0 where a class is not balanced)."""
  num_experts = counts_LC.shape[-1] - 1
  if skip_mode == "experts":
    routed = counts_LC[:, :num_experts]
    f = routed / jnp.maximum(routed.sum(-1, keepdims=True), 1.0)
    return jnp.pad(f - 1.0 / num_experts, ((0, 0), (0, 1)))
  if skip_mode == "all":
    f = counts_LC / jnp.maximum(counts_LC.sum(-1, keepdims=True), 1.0)
    return f - 1.0 / (num_experts + 1)
  raise ValueError(f"balancing.skip_mode must be one of {SKIP_MODES}, got {skip_mode!r}")


def update_biases(biases_LC, state: BalancingState, counts_LC, cfg: ml_collections.ConfigDict):
  """One AdamW step of the balancing biases from this batch's counts -> (new biases [L, E+1], new state).

  In "experts" mode the skip column is left exactly as it was (no update, no weight decay).
  """
  g = load_error(counts_LC, cfg.skip_mode)
  count = state.count + 1
  m = cfg.b1 * state.m + (1 - cfg.b1) * g
  v = cfg.b2 * state.v + (1 - cfg.b2) * g * g
  m_hat = m / (1 - cfg.b1 ** count.astype(jnp.float32))
  v_hat = v / (1 - cfg.b2 ** count.astype(jnp.float32))
  step = cfg.rate * (m_hat / (jnp.sqrt(v_hat) + cfg.eps) + cfg.weight_decay * biases_LC)
  if cfg.skip_mode == "experts":
    step = step.at[:, -1].set(0.0)
  return biases_LC - step, BalancingState(m=m, v=v, count=count)


def router_metrics(counts_LC) -> dict[str, jax.Array]:
  """Per-layer router statistics [L] from the counts [L, E+1]:

  load_max_min  max / min tokens per real expert (an expert with no tokens counts as one token, so the ratio
                stays finite); 1 is perfect balance.
  load_entropy  entropy of the real experts' load fractions / log E, in [0, 1]; 1 is perfect balance.
  skip_rate     fraction of the counted tokens that took the skip route.
  """
  num_experts = counts_LC.shape[-1] - 1
  routed = counts_LC[:, :num_experts]
  f = routed / jnp.maximum(routed.sum(-1, keepdims=True), 1.0)
  entropy = -jnp.sum(jnp.where(f > 0, f * jnp.log(jnp.where(f > 0, f, 1.0)), 0.0), -1)
  return {
      "load_max_min": routed.max(-1) / jnp.maximum(routed.min(-1), 1.0),
      "load_entropy": entropy / jnp.log(float(num_experts)) if num_experts > 1 else jnp.ones_like(entropy),
      "skip_rate": counts_LC[:, num_experts] / jnp.maximum(counts_LC.sum(-1), 1.0),
  }
