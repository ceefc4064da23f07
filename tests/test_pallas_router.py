"""The fused router kernel (interpret mode on CPU) against its reference, and the reference against the model.

Tolerances: fp32 values within 1e-5 of the largest |value| and identical routes. bf16 values within 2e-2 of
the largest |value| (three chained bf16 matmuls whose fp32 sums run in another order: ~1 bf16 ulp per layer,
compounding); routes identical wherever the reference's biased top-1 leads the runner-up by more than 2^-5,
since closer calls are bf16 near-ties that either side may legitimately break differently.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.router import erfc_f32, expert_counts, router_reference, zaya_router
from zaya_jax.config import ZayaConfig
from zaya_jax.model import Router

N, D, R, E = 37, 80, 48, 5  # odd token count; D and the 6 classes are not multiples of their blocks
BLOCKS = {"chunked": dict(block_t=16, block_d=32, block_r=16),  # 3 router chunks
          "padded": dict(block_t=32, block_d=64, block_r=32)}   # R padded to 2 chunks of 32
ROUTE_MARGIN = 2.0 ** -5


def _config(dtype):
  return ZayaConfig(vocab_size=64, hidden_size=D, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=16, moe_intermediate_size=16, num_experts=E,
                    router_hidden_size=R, eos_token_id=1, dtype=dtype, initializer_range=0.2,
                    router_impl="xla")  # the model's own XLA router (the kernel is compared separately)


@functools.lru_cache(maxsize=None)
def _setup(dtype, use_eda):
  """(config, x [N,D], carry [N,R], params): the module's own parameters, biases and betas randomised."""
  config = _config(dtype)
  kx, kc, kp, kn = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(kx, (N, D), jnp.float32).astype(config.compute_dtype)
  carry = jax.random.normal(kc, (N, R), jnp.float32).astype(config.compute_dtype)
  params = nn.meta.unbox(Router(config, use_eda).init(kp, x, carry)["params"])
  leaves, treedef = jax.tree.flatten(params)
  noise = jax.random.split(kn, len(leaves))
  params = treedef.unflatten([p + 0.2 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, noise)])
  return config, x, carry, params


def _route_margin(logits, beta):
  """Reference biased top-1 score minus the runner-up, per token."""
  probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), -1).astype(logits.dtype).astype(jnp.float32)
  top2 = jnp.sort(probs + beta, axis=-1)[:, -2:]
  return np.asarray(top2[:, 1] - top2[:, 0])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _outputs_and_grads(router, use_eda, x, carry, params, cotangents):
  """Router outputs and the VJP of (weight, logits, next_carry) w.r.t. (x, carry, params)."""
  def float_outputs(x, carry, params):
    return router(x, carry, params)[1:]
  outputs = router(x, carry, params)
  _, vjp = jax.vjp(float_outputs, x, carry, params)
  return outputs, vjp(cotangents)


def _routers(config, use_eda, blocks):
  eps = config.rms_norm_eps
  kernel = functools.partial(zaya_router, eps=eps, use_eda=use_eda, **BLOCKS[blocks])
  reference = functools.partial(router_reference, eps=eps, use_eda=use_eda)
  return kernel, reference


def _assert_close(actual, expected, rel):
  expected = np.asarray(expected, np.float64)
  tol = rel * max(np.abs(expected).max(), 1e-6)
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0, atol=tol)


def test_erfc_matches_lax_bit_for_bit():
  x = jnp.concatenate([jnp.linspace(-10.0, 10.0, 40001, dtype=jnp.float32), jnp.array([0.0, -1.0, 1.0, 2.0])])
  np.testing.assert_array_equal(jax.jit(erfc_f32)(x), jax.jit(jax.lax.erfc)(x))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("use_eda", [True, False])
def test_reference_equals_model_router(dtype, use_eda):
  config, x, carry, params = _setup(dtype, use_eda)
  expected = Router(config, use_eda).apply({"params": params}, x[None], carry[None])
  actual = router_reference(x, carry, params, eps=config.rms_norm_eps, use_eda=use_eda)
  for a, e in zip(actual, expected):
    assert a.dtype == e.dtype
    np.testing.assert_array_equal(a, e[0])


@pytest.mark.parametrize("use_eda, blocks", [(True, "chunked"), (False, "padded")])
def test_kernel_fp32_values_and_gradients(use_eda, blocks):
  config, x, carry, params = _setup("float32", use_eda)
  kernel, reference = _routers(config, use_eda, blocks)
  k = jax.random.split(jax.random.key(1), 3)
  cotangents = (jax.random.normal(k[0], (N,)), jax.random.normal(k[1], (N, E + 1)), jax.random.normal(k[2], (N, R)))
  (choice, *values), grads = _outputs_and_grads(kernel, use_eda, x, carry, params, cotangents)
  (ref_choice, *ref_values), ref_grads = _outputs_and_grads(reference, use_eda, x, carry, params, cotangents)
  np.testing.assert_array_equal(choice, ref_choice)
  assert len(set(np.asarray(choice).tolist())) > 2  # the data exercise several routes
  for a, e in zip(values, ref_values):
    assert a.dtype == e.dtype == jnp.float32
    _assert_close(a, e, 1e-5)
  for a, e in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    _assert_close(a, e, 1e-5)
  assert not np.any(np.asarray(grads[2]["balancing_biases"]))


def test_kernel_bf16_values_and_routes():
  config, x, carry, params = _setup("bfloat16", True)
  kernel, reference = _routers(config, True, "chunked")
  choice, weight, logits, next_carry = jax.jit(kernel)(x, carry, params)
  ref_choice, ref_weight, ref_logits, ref_carry = reference(x, carry, params)
  confident = _route_margin(ref_logits, params["balancing_biases"]) > ROUTE_MARGIN
  assert confident.mean() > 0.5  # most tokens are clear calls, so the route check has teeth
  np.testing.assert_array_equal(np.asarray(choice)[confident], np.asarray(ref_choice)[confident])
  same = np.asarray(choice == ref_choice)
  _assert_close(np.asarray(weight, np.float32)[same], np.asarray(ref_weight, np.float32)[same], 2e-2)
  _assert_close(logits.astype(jnp.float32), ref_logits.astype(jnp.float32), 2e-2)
  _assert_close(next_carry.astype(jnp.float32), ref_carry.astype(jnp.float32), 1e-2)
  assert weight.dtype == logits.dtype == next_carry.dtype == jnp.bfloat16


def test_expert_counts():
  counts = expert_counts(jnp.array([0, 3, 3, 5, 0, 3], jnp.int32), 6)
  np.testing.assert_array_equal(counts, [2, 0, 0, 3, 0, 1])
  assert counts.dtype == jnp.int32
