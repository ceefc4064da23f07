"""Grouped matmul kernels (interpret mode on CPU) against ragged_dot, a float64 oracle and hand-made tables."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import gmm as G

BLOCKS = dict(block_m=16, block_n=16, block_k=16)  # several tiles per axis on small arrays


def oracle_gmm(lhs, rhs, group_sizes):
  """float64 per-group loop; rows past sum(group_sizes) stay zero."""
  lhs, rhs = np.asarray(lhs, np.float64), np.asarray(rhs, np.float64)
  out = np.zeros((lhs.shape[0], rhs.shape[2]))
  start = 0
  for g, size in enumerate(np.asarray(group_sizes)):
    out[start:start + size] = lhs[start:start + size] @ rhs[g]
    start += size
  return out


def oracle_tgmm(lhs, dout, group_sizes):
  lhs, dout = np.asarray(lhs, np.float64), np.asarray(dout, np.float64)
  out = np.zeros((len(group_sizes), lhs.shape[1], dout.shape[1]))
  start = 0
  for g, size in enumerate(np.asarray(group_sizes)):
    out[g] = lhs[start:start + size].T @ dout[start:start + size]
    start += size
  return out


# ---------------------------------------------------------------------------------------------------------
# Index math


def test_group_offsets_adds_the_tail_segment_and_clamps():
  np.testing.assert_array_equal(G.group_offsets(jnp.array([30, 0, 45, 10]), 100), [0, 30, 30, 75, 85, 100])
  np.testing.assert_array_equal(G.group_offsets(jnp.array([0, 64]), 64), [0, 0, 64, 64])
  np.testing.assert_array_equal(G.group_offsets(jnp.array([40, 40]), 64), [0, 40, 64, 64])


def test_tile_group_table_hand_example():
  # Rows: group 0 [0,30), group 1 empty, group 2 [30,75), group 3 [75,85), tail [85,100); 16-row tiles.
  segment, tile = G.tile_group_table(G.group_offsets(jnp.array([30, 0, 45, 10]), 100), 100, 16)
  assert segment.shape == (G.num_work_items(100, 4, 16),) == (11,)
  np.testing.assert_array_equal(segment, [0, 0, 2, 2, 2, 2, 3, 3, 4, 4, 5])
  np.testing.assert_array_equal(tile, [0, 1, 1, 2, 3, 4, 4, 5, 5, 6, 0])


@pytest.mark.parametrize("seed", range(5))
def test_tile_group_table_lists_every_overlap_once(seed):
  rng = np.random.default_rng(seed)
  num_rows, block_m, num_groups = int(rng.integers(1, 200)), 16, int(rng.integers(1, 9))
  sizes = rng.multinomial(int(rng.integers(0, num_rows + 1)), np.ones(num_groups) / num_groups)
  offsets = G.group_offsets(jnp.asarray(sizes), num_rows)
  segment, tile = map(np.asarray, G.tile_group_table(offsets, num_rows, block_m))
  bounds = np.asarray(offsets)
  expected = [(s, t) for s in range(num_groups + 1) for t in range(G.num_work_items(num_rows, 0, block_m))
              if max(bounds[s], t * block_m) < min(bounds[s + 1], (t + 1) * block_m)]
  used = segment <= num_groups
  assert list(zip(segment[used], tile[used])) == expected
  assert np.all(segment[len(expected):] == num_groups + 1)


# ---------------------------------------------------------------------------------------------------------
# Kernels

CASES = {
    # empty group, rows past sum(group_sizes), no dimension a multiple of its block
    "ragged": ((30, 0, 45, 10), 100, 40, 50, jnp.float32),
    # every row in one group, all dimensions aligned (the unmasked fast path)
    "one_group": ((0, 64, 0), 64, 32, 48, jnp.float32),
    "bf16": ((20, 17, 0, 20), 64, 48, 32, jnp.bfloat16),
}


def _operands(group_sizes, M, K, N, dtype, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  lhs = jax.random.normal(k1, (M, K), jnp.float32).astype(dtype)
  rhs = jax.random.normal(k2, (len(group_sizes), K, N), jnp.float32).astype(dtype)
  dout = jax.random.normal(k3, (M, N), jnp.float32).astype(dtype)
  return lhs, rhs, jnp.asarray(group_sizes, jnp.int32), dout


@functools.partial(jax.jit, static_argnums=0)
def _value_and_grads(fn, lhs, rhs, group_sizes, dout):
  out, vjp = jax.vjp(lambda a, b: fn(a, b, group_sizes), lhs, rhs)
  return (out, *vjp(dout))


def _kernel_gmm(lhs, rhs, group_sizes):
  return G.gmm(lhs, rhs, group_sizes, **BLOCKS)


def _assert_close(actual, expected, dtype):
  """fp32: 1e-5 of the largest |value|; bf16: 1e-2 (both sides round one fp32 sum; they differ in its order)."""
  expected = np.asarray(expected, np.float64)
  tol = (1e-5 if dtype == jnp.float32 else 1e-2) * max(np.abs(expected).max(), 1.0)
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0, atol=tol)


@pytest.mark.parametrize("case", CASES)
def test_gmm_values_and_gradients_match_reference(case):
  group_sizes, M, K, N, dtype = CASES[case]
  lhs, rhs, gs, dout = _operands(group_sizes, M, K, N, dtype)
  out, dlhs, drhs = _value_and_grads(_kernel_gmm, lhs, rhs, gs, dout)
  ref_out, ref_dlhs, ref_drhs = _value_and_grads(G.gmm_reference, lhs, rhs, gs, dout)
  assert out.dtype == dlhs.dtype == drhs.dtype == dtype
  _assert_close(out, ref_out, dtype)
  _assert_close(dlhs, ref_dlhs, dtype)
  _assert_close(drhs, ref_drhs, dtype)
  _assert_close(ref_out, oracle_gmm(lhs, rhs, gs), dtype)
  _assert_close(ref_drhs, oracle_tgmm(lhs, dout, gs), dtype)
  total = sum(group_sizes)
  assert not np.any(np.asarray(out[total:])) and not np.any(np.asarray(dlhs[total:]))
  for g, size in enumerate(group_sizes):
    if size == 0:
      assert not np.any(np.asarray(drhs[g]))


def test_tgmm_matches_reference_and_oracle():
  lhs, _, gs, dout = _operands((0, 50, 7, 0, 20), 90, 24, 40, jnp.float32, seed=1)
  out = G.tgmm(lhs, dout, gs, 5, **BLOCKS)
  assert out.shape == (5, 24, 40)
  _assert_close(out, G.tgmm_reference(lhs, dout, gs, 5), jnp.float32)
  _assert_close(out, oracle_tgmm(lhs, dout, gs), jnp.float32)


def test_launch_defaults_by_vendor():
  assert G.launch_defaults("NVIDIA H200") == G.NVIDIA_LAUNCH
  for kind in ("AMD Instinct MI300X", "cpu"):
    assert G.launch_defaults(kind) == G.PORTABLE_LAUNCH
  # Parameters left None are filled per parameter (from the default device's vendor): block_m alone may be set.
  defaults = G.launch_defaults(jax.devices()[0].device_kind)
  assert G._config(True, block_m=16, block_n=None, block_k=None, num_warps=None, num_stages=None) == \
      G.KernelConfig(**{**defaults, "block_m": 16}, interpret=True)


def test_bad_arguments_raise():
  lhs, rhs, gs, dout = jnp.zeros((8, 16)), jnp.zeros((2, 16, 16)), jnp.array([4, 4]), jnp.zeros((8, 16))
  with pytest.raises(ValueError, match="block_m"):
    G.gmm(lhs, rhs, gs, block_m=24)
  with pytest.raises(ValueError, match="entries"):
    G.gmm(lhs, rhs, gs[:1])
  with pytest.raises(ValueError, match="groups"):
    G.tgmm(lhs, dout, gs, 3)
