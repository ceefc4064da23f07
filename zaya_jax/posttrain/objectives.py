"""The RL objective of the ZAYA1 post-training cascade (RSA_AND_POSTTRAINING.md §5.4), as pure functions.

Shapes: P prompts (groups), G rollouts per prompt, B = P·G rollouts, T response tokens.

Advantages (one per rollout, shared by all of its tokens):
  maxrl     Â_i = (r_i − r̄ + Δr_i) / r̄, r̄ the group mean; a group with r̄ = 0 gets Â = 0 (nothing to learn).
  grpo      Â_i = r_i − r̄ + Δr_i.
  grpo_std  Â_i = (r_i − r̄) / (std(r) + ε) (the behavioural stage: no length term).
  reinforce Â_i = r_i − b + Δr_i with a fixed baseline b (`rl.baseline`), no group statistics: a group whose
            rollouts all fail still pushes its replies down (with dynamic sampling off). For 0/1 rewards,
            b = 1/(1 + λ) is W-REINFORCE (Zhu et al. 2025, "The Surprising Effectiveness of Negative
            Reinforcement in LLM Reasoning": +λ for a correct reply, −1 for a wrong one, scaled by 1/(1 + λ)).
Δr is the length reward, added to the numerator only (`length_bonus`). `weigh_negatives` scales the negative
advantages by w ∈ [0, 1] (w = 0: only the correct rollouts are reinforced, rejection-sampling fine-tuning; the
expected gradient of the lost zero-sum part is 0 on-policy, since E[∇log π] = 0).

Dynamic sampling (DAPO): groups whose rewards are all equal carry no ranking signal and are dropped (weight 0)
rather than resampled, so every step has the same shapes and cost.

Trust region, DPPO Binary-TV (Qi et al. 2026, "Rethinking the Trust Region in LLM RL"): the divergence of a
token is the total variation between the binary distributions {a, not a} of the rollout policy and the current
one, |π_θ(a) − π_old(a)|. As in that paper's reference implementation the mask is one-sided: a token leaves the
gradient when the update has already moved its probability by more than δ in the direction its advantage
pushes (up for Â > 0, down for Â < 0); a token that drifted the other way keeps its gradient, which pulls it
back. No ratio clipping and no KL term.

Loss (Dr-GRPO aggregation): per token −Â·ρ·keep, with ρ = π_θ(a)/π_old(a) capped at `ratio_cap` (the cap only
scales the gradient; it never flips its sign); summed over a rollout's response tokens, then averaged over the
rollouts that count (weight 1), so long responses are not down-weighted by a 1/length factor.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

ADVANTAGES = ("maxrl", "grpo", "grpo_std", "reinforce")


@dataclasses.dataclass(frozen=True)
class LengthReward:
  """Constants of the length reward (§5.4; the report does not publish ℓ_max, T_ℓ, T_acc).

  coef       c, the scale (0 turns the term off; the report ramps it from small in warm-up to 1.0).
  max_len    ℓ_max, the length at which a correct rollout's bonus reaches its minimum −½ (the response budget).
  len_tol    T_ℓ, rollouts within this many tokens of the shortest correct one get the full +½.
  acc_tol    T_acc, the bonus is paid only while the group's solve rate p exceeds p* − T_acc, p* the best solve
             rate seen so far for the prompt's source.
  """
  coef: float = 0.0
  max_len: int = 256
  len_tol: int = 8
  acc_tol: float = 0.1


def length_bonus(correct_PG, lengths_PG, best_solve_rate_P, cfg: LengthReward):
  """Δr [P, G] = c · p · m_i · λ_i (§5.4).

  λ_i = ½ − clip((ℓ_i − ℓ_min)/(ℓ_max − ℓ_min), 0, 1), or ½ when ℓ_i ≤ ℓ_min + T_ℓ, with ℓ_min the shortest
  correct length of the group; m_i = 1[p > p* − T_acc] · 1[p > 1/G] · 1[rollout i correct], p the group's
  solve rate. The report writes λ̃_i without defining the tilde; we use λ_i as defined.
  """
  correct = jnp.asarray(correct_PG, bool)
  lengths = jnp.asarray(lengths_PG, jnp.float32)
  G = correct.shape[1]
  p = correct.mean(axis=1, keepdims=True)
  shortest = jnp.min(jnp.where(correct, lengths, jnp.inf), axis=1, keepdims=True)
  shortest = jnp.where(jnp.isfinite(shortest), shortest, 0.0)
  span = jnp.maximum(cfg.max_len - shortest, 1.0)
  lam = 0.5 - jnp.clip((lengths - shortest) / span, 0.0, 1.0)
  lam = jnp.where(lengths <= shortest + cfg.len_tol, 0.5, lam)
  best = jnp.asarray(best_solve_rate_P, jnp.float32)[:, None]
  gate = (p > best - cfg.acc_tol) & (p > 1.0 / G) & correct
  return cfg.coef * p * gate * lam


def advantages(rewards_PG, kind: str, bonus_PG=None, eps: float = 1e-6, baseline: float = 0.0):
  """Per-rollout advantages [P, G] of `kind` (module docstring); bonus_PG (Δr) is ignored by grpo_std, `baseline`
  is reinforce's b."""
  r = jnp.asarray(rewards_PG, jnp.float32)
  bonus = jnp.zeros_like(r) if bonus_PG is None else jnp.asarray(bonus_PG, jnp.float32)
  mean = r.mean(axis=1, keepdims=True)
  if kind == "maxrl":
    safe = jnp.where(mean > 0, mean, 1.0)
    return jnp.where(mean > 0, (r - mean + bonus) / safe, 0.0)
  if kind == "grpo":
    return r - mean + bonus
  if kind == "grpo_std":
    return (r - mean) / (r.std(axis=1, keepdims=True) + eps)
  if kind == "reinforce":
    return r - baseline + bonus
  raise ValueError(f"rl.advantage must be one of {ADVANTAGES}, got {kind!r}")


def weigh_negatives(advantages_PG, weight: float):
  """The advantages with every negative one multiplied by `weight` (module docstring)."""
  adv = jnp.asarray(advantages_PG, jnp.float32)
  return jnp.where(adv < 0, weight * adv, adv)


def has_variance(rewards_PG):
  """[P] bool: the groups dynamic sampling keeps (rewards not all equal)."""
  r = jnp.asarray(rewards_PG, jnp.float32)
  return jnp.any(r != r[:, :1], axis=1)


def enough_successes(correct_PG, minimum: int):
  """[P] bool: the groups with at least `minimum` correct rollouts (0 keeps all).

  A policy that cannot solve a problem still answers it correctly now and then by guessing a frequent answer
  (small integers, 0 for many modular products); a group with one correct rollout in G is most often such a
  guess, and its advantage (largest under MaxRL: G − 1) teaches guessing. At a 5% guess rate and G = 16, 4% of
  groups have 3 or more correct rollouts, against 65% at a 20% solve rate."""
  return jnp.sum(jnp.asarray(correct_PG, jnp.int32), axis=1) >= minimum


def response_logprobs(logits_BSV, tokens_BS, prompt_width: int, temperature: float = 1.0, vocab_limit: int = 0):
  """log π(token) of the response tokens -> [B, T], T = S − prompt_width.

  Rows are [prompt left-padded to prompt_width | response]; logits at position t score the token at t + 1, so
  response token j (at prompt_width + j) is scored by the logits at prompt_width + j − 1. The distribution is the
  sampler's: logits / temperature (fp32) over the first `vocab_limit` ids when > 0.
  """
  logits = logits_BSV[:, prompt_width - 1:-1].astype(jnp.float32)
  if vocab_limit:
    logits = logits[..., :vocab_limit]
  logp = jax.nn.log_softmax(logits / temperature, axis=-1)
  return jnp.take_along_axis(logp, tokens_BS[:, prompt_width:, None], axis=-1)[..., 0]


def response_mask(lengths_B, num_tokens: int):
  """[B, T] float mask of the generated tokens (the stop token included); prompt and padding are not in it."""
  return (jnp.arange(num_tokens)[None, :] < jnp.asarray(lengths_B)[:, None]).astype(jnp.float32)


def trust_region_keep(logp_BT, old_logp_BT, advantages_B, delta: float):
  """[B, T] bool: tokens inside the DPPO Binary-TV trust region (module docstring)."""
  shift = jnp.exp(logp_BT) - jnp.exp(old_logp_BT)
  adv = jnp.asarray(advantages_B)[:, None]
  return jnp.where(adv > 0, shift <= delta, jnp.where(adv < 0, shift >= -delta, True))


class LossStats(NamedTuple):
  """Sums over the counted response tokens (so minibatches add up): tokens, masked (outside the trust region),
  ratio_sum (ρ before capping)."""
  tokens: jax.Array
  masked: jax.Array
  ratio_sum: jax.Array


def policy_loss(logp_BT, old_logp_BT, advantages_B, mask_BT, weights_B, num_rollouts, *, delta: float,
                ratio_cap: float = 20.0):
  """Dr-GRPO policy-gradient loss of the DPPO-masked importance-weighted surrogate -> (loss [], LossStats).

  mask_BT: response tokens (`response_mask`); weights_B: 1 for rollouts that count, 0 for dropped groups;
  num_rollouts: the divisor, the number of counted rollouts of the whole update (a constant, so the gradients
  of several sub-batches of one update add up to the gradient of the whole).
  """
  old = jax.lax.stop_gradient(old_logp_BT)
  ratio = jnp.exp(logp_BT - old)
  capped = jnp.minimum(ratio, ratio_cap)
  surrogate = ratio * jax.lax.stop_gradient(capped / ratio)  # value ρ ∧ cap, gradient (ρ ∧ cap)·∇log π
  adv = jnp.asarray(advantages_B, jnp.float32)
  keep = jax.lax.stop_gradient(trust_region_keep(logp_BT, old, adv, delta)).astype(jnp.float32)
  counted = mask_BT * jnp.asarray(weights_B, jnp.float32)[:, None]
  per_rollout = jnp.sum(-adv[:, None] * surrogate * keep * counted, axis=1)
  loss = per_rollout.sum() / jnp.maximum(num_rollouts, 1.0)
  stats = LossStats(tokens=counted.sum(), masked=jnp.sum((1.0 - keep) * counted),
                    ratio_sum=jnp.sum(jax.lax.stop_gradient(ratio) * counted))
  return loss, stats
