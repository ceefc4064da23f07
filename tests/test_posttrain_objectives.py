"""The RL objective (zaya_jax/posttrain/objectives.py) on hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zaya_jax.posttrain import objectives as obj

REWARDS = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_maxrl_divides_by_the_group_mean_and_guards_a_zero_mean():
  adv = obj.advantages(REWARDS, "maxrl")
  np.testing.assert_allclose(adv, [[1, -1, -1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [3, -1, -1, -1]], atol=1e-6)


def test_grpo_subtracts_the_mean_and_grpo_std_also_divides_by_the_std():
  np.testing.assert_allclose(obj.advantages(REWARDS, "grpo"),
                             [[.5, -.5, -.5, .5], [0] * 4, [0] * 4, [.75, -.25, -.25, -.25]], atol=1e-6)
  std = math.sqrt(3) / 4  # population std of [1, 0, 0, 0]
  np.testing.assert_allclose(obj.advantages(REWARDS, "grpo_std"),
                             [[1, -1, -1, 1], [0] * 4, [0] * 4, [.75 / std, -.25 / std, -.25 / std, -.25 / std]],
                             atol=1e-4)


def test_reinforce_subtracts_a_fixed_baseline_so_failed_groups_still_push_down():
  adv = obj.advantages([[1, 0, 0, 0], [0, 0, 0, 0]], "reinforce", baseline=1 / 1.1)  # W-REINFORCE, λ = 0.1
  np.testing.assert_allclose(adv, np.asarray([[0.1, -1, -1, -1], [-1, -1, -1, -1]]) / 1.1, rtol=1e-6)
  np.testing.assert_allclose(obj.advantages([[1, 0]], "reinforce", [[0.5, 0.0]]), [[1.5, 0.0]])


def test_the_length_bonus_enters_the_numerator_only():
  bonus = [[0.2, 0, 0, -0.1]] + [[0] * 4] * 3
  adv = obj.advantages(REWARDS, "maxrl", bonus)
  np.testing.assert_allclose(adv[0], [(0.5 + 0.2) / 0.5, -1, -1, (0.5 - 0.1) / 0.5], atol=1e-6)
  np.testing.assert_allclose(obj.advantages(REWARDS, "grpo", bonus)[0], [0.7, -0.5, -0.5, 0.4], atol=1e-6)
  np.testing.assert_allclose(obj.advantages(REWARDS, "grpo_std", bonus), obj.advantages(REWARDS, "grpo_std"))


def test_unknown_advantage_is_named():
  with pytest.raises(ValueError, match="rl.advantage must be one of"):
    obj.advantages(REWARDS, "ppo")


def test_dynamic_sampling_keeps_groups_with_reward_variance():
  np.testing.assert_array_equal(obj.has_variance(REWARDS), [True, False, False, True])


def test_negative_advantages_are_scaled_and_positive_ones_kept():
  adv = obj.advantages([[1, 0, 0, 0], [0, 0, 0, 0]], "maxrl")  # [3, -1, -1, -1], [0, 0, 0, 0]
  np.testing.assert_allclose(obj.weigh_negatives(adv, 0.25), [[3, -0.25, -0.25, -0.25], [0, 0, 0, 0]])
  np.testing.assert_allclose(obj.weigh_negatives(adv, 0.0), [[3, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_allclose(obj.weigh_negatives(adv, 1.0), adv)


def test_min_correct_keeps_groups_with_enough_correct_rollouts():
  correct = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
  np.testing.assert_array_equal(obj.enough_successes(correct, 2), [False, True, False, True])
  np.testing.assert_array_equal(obj.enough_successes(correct, 0), [True] * 4)


def test_length_bonus_hand_computed():
  cfg = obj.LengthReward(coef=1.0, max_len=110, len_tol=2, acc_tol=0.1)
  correct = [[1, 1, 1, 0],  # p = 0.75, shortest correct 10
             [1, 0, 0, 0],  # p = 1/G: no bonus
             [1, 1, 1, 0],  # p = 0.75 <= p* - T_acc = 0.9: no bonus
             [1, 1, 0, 0]]  # p = 0.5, shortest correct 20; 300 is past max_len
  lengths = [[10, 14, 50, 5], [10, 20, 30, 40], [10, 14, 50, 5], [20, 300, 7, 7]]
  best = [0.5, 0.0, 1.0, 0.5]
  expected = [[0.75 * 0.5, 0.75 * (0.5 - 4 / 100), 0.75 * (0.5 - 40 / 100), 0],
              [0, 0, 0, 0],
              [0, 0, 0, 0],
              [0.5 * 0.5, 0.5 * -0.5, 0, 0]]
  np.testing.assert_allclose(obj.length_bonus(correct, lengths, best, cfg), expected, atol=1e-6)
  np.testing.assert_allclose(obj.length_bonus(correct, lengths, best, obj.LengthReward()), np.zeros((4, 4)))


def test_response_logprobs_score_each_response_token_with_the_previous_position():
  logits = jnp.asarray([[[0., 0, 0], [1, 2, 3], [3, 0, -1], [9, 9, 9]]])  # [B=1, S=4, V=3]
  tokens = jnp.asarray([[5, 7, 2, 0]])  # prompt width 2: response tokens 2, 0
  logp = obj.response_logprobs(logits, tokens, prompt_width=2)
  lse = lambda row: math.log(sum(math.exp(v) for v in row))
  np.testing.assert_allclose(logp, [[3 - lse([1, 2, 3]), 3 - lse([3, 0, -1])]], atol=1e-6)
  hot = obj.response_logprobs(logits, tokens, prompt_width=2, temperature=2.0, vocab_limit=3)
  np.testing.assert_allclose(hot, [[1.5 - lse([.5, 1, 1.5]), 1.5 - lse([1.5, 0, -.5])]], atol=1e-6)
  tokens_01 = jnp.asarray([[5, 7, 1, 0]])
  limited = obj.response_logprobs(logits, tokens_01, prompt_width=2, vocab_limit=2)
  np.testing.assert_allclose(limited, [[2 - lse([1, 2]), 3 - lse([3, 0])]], atol=1e-6)


def test_response_mask_covers_generated_tokens_only():
  np.testing.assert_array_equal(obj.response_mask(jnp.asarray([0, 2, 3]), 3),
                                [[0, 0, 0], [1, 1, 0], [1, 1, 1]])


def test_trust_region_masks_only_moves_past_delta_in_the_advantage_direction():
  old = jnp.log(jnp.asarray([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.1, 0.9, 0.5]]))
  new = jnp.log(jnp.asarray([[0.55, 0.7, 0.2], [0.3, 0.9, 0.45], [0.9, 0.1, 0.5]]))
  keep = obj.trust_region_keep(new, old, jnp.asarray([1.0, -1.0, 0.0]), delta=0.1)
  np.testing.assert_array_equal(keep, [[True, False, True],  # +0.05 in, +0.2 out, -0.3 against A > 0: kept
                                       [False, True, True],  # -0.2 out, +0.4 against A < 0: kept, -0.05 in
                                       [True, True, True]])  # A = 0: no direction, nothing masked


def _loss_case():
  old = jnp.log(jnp.asarray([[0.5, 0.5, 0.2], [0.4, 0.4, 0.4]]))
  new = jnp.log(jnp.asarray([[0.55, 0.8, 0.28], [0.2, 0.45, 0.9]]))
  return new, old, jnp.asarray([1.0, -2.0]), jnp.asarray([[1., 1, 1], [1, 1, 0]]), jnp.asarray([1.0, 1.0])


def test_policy_loss_value_and_gradient_hand_computed():
  new, old, adv, mask, weights = _loss_case()
  loss, stats = obj.policy_loss(new, old, adv, mask, weights, 2.0, delta=0.1)
  # Rollout 0 (A = 1): ratios 1.1, 1.6 (masked: +0.3 > δ), 1.4 (+0.08) -> -(1.1 + 1.4).
  # Rollout 1 (A = -2): ratios 0.5 (masked: -0.2 < -δ), 1.125; the third token is padding -> +2 * 1.125.
  np.testing.assert_allclose(loss, (-(1.1 + 1.4) + 2 * 1.125) / 2, atol=1e-5)
  np.testing.assert_allclose([stats.tokens, stats.masked], [5, 2])
  np.testing.assert_allclose(stats.ratio_sum, 1.1 + 1.6 + 1.4 + 0.5 + 1.125, atol=1e-5)
  grad = jax.grad(lambda lp: obj.policy_loss(lp, old, adv, mask, weights, 2.0, delta=0.1)[0])(new)
  # d/dlogπ of -A·ρ is -A·ρ; masked and padding tokens get nothing.
  np.testing.assert_allclose(grad, [[-1.1 / 2, 0, -1.4 / 2], [0, 2 * 1.125 / 2, 0]], atol=1e-5)


def test_policy_loss_caps_the_ratio_without_flipping_the_gradient():
  old = jnp.log(jnp.asarray([[0.01]]))
  new = jnp.log(jnp.asarray([[0.05]]))  # ρ = 5, shift +0.04 < δ
  grad = jax.grad(lambda lp: obj.policy_loss(lp, old, jnp.asarray([1.0]), jnp.ones((1, 1)), jnp.ones(1), 1.0,
                                             delta=0.1, ratio_cap=2.0)[0])(new)
  np.testing.assert_allclose(grad, [[-2.0]], atol=1e-5)


def test_dr_grpo_sums_tokens_and_averages_counted_rollouts():
  new, old, adv, mask, _ = _loss_case()
  only_first, _ = obj.policy_loss(new, old, adv, mask, jnp.asarray([1.0, 0.0]), 1.0, delta=0.1)
  np.testing.assert_allclose(only_first, -(1.1 + 1.4), atol=1e-5)  # a token sum, not a token mean
  whole, _ = obj.policy_loss(new, old, adv, mask, jnp.ones(2), 2.0, delta=0.1)
  parts = [obj.policy_loss(new[i:i + 1], old[i:i + 1], adv[i:i + 1], mask[i:i + 1], jnp.ones(1), 2.0,
                           delta=0.1)[0] for i in range(2)]
  np.testing.assert_allclose(sum(parts), whole, atol=1e-6)  # sub-batches of one update add up
