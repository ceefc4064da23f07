"""Expert dispatch: index math, gather-only permutation gradients, blocked grouped matmul, every moe_impl."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_CONFIGS
from jax.test_util import check_grads

from zaya_jax import forward, moe

E = 4  # experts in these tests; class 4 is the skip route


def test_dispatch_plan_hand_checked():
  choice = jnp.array([2, 0, E, 0, 2, 2, 3])
  plan = moe.dispatch_plan(choice, E, block_size=2)
  np.testing.assert_array_equal(plan.counts, [2, 0, 3, 1])
  np.testing.assert_array_equal(plan.group_sizes, [2, 0, 4, 2])
  R = moe.buffer_rows(7, E, 2)  # (ceil(7/2) + 4) * 2
  assert R == 16 and plan.gather_rows.shape == (R,)
  # Expert 0: tokens 1, 3; expert 2: tokens 0, 4, 5 + one padding row; expert 3: token 6 + padding.
  np.testing.assert_array_equal(plan.gather_rows[:8], [1, 3, 0, 4, 5, 7, 6, 7])
  assert np.all(np.asarray(plan.gather_rows[8:]) == 7)  # unused rows read the zero row
  np.testing.assert_array_equal(plan.combine_rows, [2, 0, R, 1, 3, 4, 6])


@pytest.mark.parametrize("choice", [
    [E] * 5,  # every token takes the skip route
    [1] * 9,  # all tokens on one expert
    [0, 3, 3, 0, E, 1, 3, 0, 0, 3, E],  # an empty expert (2), skip tokens, odd count
])
@pytest.mark.parametrize("block_size", [1, 4])
def test_dispatch_plan_is_a_bijection_between_routed_tokens_and_rows(choice, block_size):
  choice = jnp.array(choice)
  N = len(choice)
  plan = moe.dispatch_plan(choice, E, block_size)
  routed = np.flatnonzero(np.asarray(choice) < E)
  combine = np.asarray(plan.combine_rows)
  gather = np.asarray(plan.gather_rows)
  np.testing.assert_array_equal(gather[combine[routed]], routed)
  assert np.all(combine[np.asarray(choice) == E] == moe.buffer_rows(N, E, block_size))
  assert np.sum(gather < N) == len(routed)
  np.testing.assert_array_equal(plan.counts, np.bincount(np.asarray(choice), minlength=E + 1)[:E])
  assert np.all(np.asarray(plan.group_sizes) % block_size == 0)
  assert int(np.sum(plan.group_sizes)) <= moe.buffer_rows(N, E, block_size)
  # Rows of group g are contiguous, in group order, and hold tokens routed to g in their original order.
  start = 0
  for g, size in enumerate(np.asarray(plan.group_sizes)):
    rows = gather[start:start + size]
    tokens = rows[rows < N]
    np.testing.assert_array_equal(tokens, np.flatnonzero(np.asarray(choice) == g))
    start += size


def test_effective_block_size():
  assert moe.effective_block_size(1, 128, 16) == 1
  assert moe.effective_block_size(64, 128, 16) == 1  # a quarter of the mean group of 4 tokens, at least 1
  assert moe.effective_block_size(65, 128, 16) == 2
  assert moe.effective_block_size(1024, 128, 16) == 16
  assert moe.effective_block_size(16384, 128, 16) == 128


def _case(N, D=16, I=8, dtype=jnp.float32, seed=0, choice=None):
  k = jax.random.split(jax.random.key(seed), 5)
  x = jax.random.normal(k[0], (N, D), dtype)
  gate_up = (jax.random.normal(k[1], (E, D, 2 * I)) / 4).astype(dtype)
  down = (jax.random.normal(k[2], (E, I, D)) / 3).astype(dtype)
  if choice is None:
    choice = jax.random.randint(k[3], (N,), 0, E + 1).at[1].set(E)
    choice = jnp.where(choice == 1, 0, choice)  # expert 1 stays empty
  weight = jax.random.uniform(k[4], (N,), dtype)
  return x, jnp.asarray(choice), weight, gate_up, down


def test_permutation_gradients_are_gathers_of_the_right_rows():
  x, choice, weight, _, _ = _case(11)
  plan = moe.dispatch_plan(choice, E, block_size=4)
  fixed = lambda f: (lambda *a: f(*a, plan.gather_rows, plan.combine_rows))
  check_grads(fixed(moe.permute), (x,), order=1, modes=["rev"])
  y = moe.permute(x, plan.gather_rows, plan.combine_rows) * 1.5
  check_grads(fixed(moe.unpermute), (y, weight), order=1, modes=["rev"])
  round_trip = moe.unpermute(moe.permute(x, plan.gather_rows, plan.combine_rows), jnp.ones_like(weight),
                             plan.gather_rows, plan.combine_rows)
  expected = jnp.where((choice < E)[:, None], x, 0)
  np.testing.assert_array_equal(round_trip, expected)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_blocked_gmm_matches_ragged_dot(dtype):
  block = 4
  sizes = jnp.array([8, 0, 12, 4])
  R = 28  # 4 trailing rows outside every group must come out zero
  k = jax.random.split(jax.random.key(1), 3)
  lhs = jax.random.normal(k[0], (R, 16), dtype)
  rhs = jax.random.normal(k[1], (E, 16, 24), dtype)
  ours = moe.blocked_gmm(lhs, rhs, sizes, block)
  ref = jax.lax.ragged_dot(lhs, rhs, sizes, preferred_element_type=jnp.float32).astype(dtype)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(ref, np.float32), atol=tol * 16, rtol=tol)
  assert np.all(np.asarray(ours[24:], np.float32) == 0)
  dout = jax.random.normal(k[2], (R, 24), dtype)
  g_ours = jax.vjp(lambda a, b: moe.blocked_gmm(a, b, sizes, block), lhs, rhs)[1](dout)
  g_ref = jax.vjp(lambda a, b: jax.lax.ragged_dot(a, b, sizes), lhs, rhs)[1](dout)
  for a, b in zip(g_ours, g_ref):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=tol * 40, rtol=tol)


CHOICES = {
    "mixed": None,
    "one_expert": [2] * 13,
    "all_skip": [E] * 6,
}


@pytest.mark.parametrize("impl, case, dtype", [
    *[(impl, case, dtype) for impl in ("blocked", "ragged_dot")
      for case, dtype in (("mixed", jnp.float32), ("mixed", jnp.bfloat16), ("one_expert", jnp.float32),
                          ("all_skip", jnp.float32))],
    ("gather", "mixed", jnp.float32), ("gather", "all_skip", jnp.float32),
])
def test_expert_ffn_equals_reference(impl, case, dtype):
  N = 13 if CHOICES[case] is None else len(CHOICES[case])
  x, choice, weight, gate_up, down = _case(N, dtype=dtype, choice=CHOICES[case])
  run = lambda fn: jax.value_and_grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32) ** 2), argnums=(0, 1, 2, 3))(
      x, weight, gate_up, down)
  ours, g_ours = run(lambda x, w, gu, d: moe.expert_ffn(x, choice, w, gu, d, moe_impl=impl, block_size=4))
  ref, g_ref = run(lambda x, w, gu, d: moe.reference_ffn(x, choice, w, gu, d))
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  np.testing.assert_allclose(ours, ref, rtol=tol)
  for a, b in zip(g_ours, g_ref):
    scale = max(float(np.abs(np.asarray(b, np.float32)).max()), 1e-6)
    assert float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max()) <= tol * scale


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores; `pytest -m slow` runs it
def test_model_logits_and_gradients_agree_across_moe_impls(reference_models):
  config, _, params = reference_models("base")
  ids = np.random.RandomState(30).randint(0, config.vocab_size, (2, 9))

  def loss_and_grad(impl):
    cfg = config.replace(moe_impl=impl, moe_block_size=8)
    return jax.value_and_grad(lambda p: jnp.sum(forward(p, cfg, ids) ** 2) / 1e4)(params)

  ref_loss, ref_grads = loss_and_grad("reference")
  for impl in ("blocked", "ragged_dot"):
    loss, grads = loss_and_grad(impl)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(float(np.abs(b).max()), 1e-3))


def test_auto_resolves_to_gather_for_few_tokens_else_blocked_on_cpu():
  assert moe.resolve_impl("auto") == "blocked"
  assert moe.resolve_impl("auto", num_tokens=16, num_experts=16) == "gather"  # a decode step of batch 16
  assert moe.resolve_impl("auto", num_tokens=17, num_experts=16) == "blocked"
  assert moe.resolve_impl("blocked", num_tokens=1, num_experts=16) == "blocked"  # named choices are kept
  with pytest.raises(ValueError, match="moe_impl must be one of"):
    moe.resolve_impl("dense")
  assert TINY_CONFIGS["base"].moe_impl == "auto"
