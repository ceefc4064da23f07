"""Every kernel cross-lowers from this CPU machine to ROCm and CUDA through Pallas' Triton path.

The lowered module must hold the Triton custom call and no Mosaic GPU one (Mosaic GPU, Pallas' default on
GPU, refuses ROCm). Shapes are ZAYA1-8B's (bf16, D=2048, 2I=4096, 16 experts, router width 256, 17 classes)
plus a ragged small case that needs every edge mask; lowering only traces, so nothing is computed.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels.gmm import gmm, tgmm
from pallas_kernels.router import zaya_router

TRITON_CALL = "__gpu$xla.gpu.triton"
MOSAIC_GPU_CALL = "mosaic_gpu"  # its custom call target is "mosaic_gpu_v2"
BF16 = jnp.bfloat16


def _spec(*shape, dtype=BF16):
  return jax.ShapeDtypeStruct(shape, dtype)


def _gmm_with_grads(lhs, rhs, group_sizes, dout):
  out, vjp = jax.vjp(lambda a, b: gmm(a, b, group_sizes, interpret=False), lhs, rhs)
  return (out, *vjp(dout))


def _gmm_case(M, K, N, G):
  return _gmm_with_grads, (_spec(M, K), _spec(G, K, N), _spec(G, dtype=jnp.int32), _spec(M, N)), 3


def _tgmm_case(M, K, N, G):
  fn = functools.partial(tgmm, num_groups=G, interpret=False)
  return fn, (_spec(M, K), _spec(M, N), _spec(G, dtype=jnp.int32)), 1


def _router_case(N, D, R, C, use_eda):
  params = {"down_proj_kernel": _spec(D, R), "down_proj_bias": _spec(R), "norm": {"weight": _spec(R)},
            "fc1_kernel": _spec(R, R), "fc1_bias": _spec(R), "fc2_kernel": _spec(R, R), "fc2_bias": _spec(R),
            "out_proj_kernel": _spec(R, C), "balancing_biases": _spec(C, dtype=jnp.float32)}
  if use_eda:
    params["router_states_scale"] = _spec(R)
  fn = functools.partial(zaya_router, eps=1e-5, use_eda=use_eda, interpret=False)
  return fn, (_spec(N, D), _spec(N, R), params), 1


CASES = {
    "gmm_zaya": _gmm_case(4096, 2048, 4096, 16),
    "gmm_ragged": _gmm_case(100, 40, 50, 4),
    "tgmm_zaya": _tgmm_case(4096, 2048, 4096, 16),
    "tgmm_ragged": _tgmm_case(100, 40, 50, 4),
    "router_zaya": _router_case(4096, 2048, 256, 17, use_eda=True),
    "router_ragged": _router_case(37, 80, 12, 5, use_eda=False),
}


@pytest.mark.parametrize("platform", ["rocm", "cuda"])
@pytest.mark.parametrize("case", CASES)
def test_lowers_to_triton_only(case, platform):
  fn, args, num_kernels = CASES[case]
  text = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()
  assert text.count(TRITON_CALL) == num_kernels
  assert MOSAIC_GPU_CALL not in text
