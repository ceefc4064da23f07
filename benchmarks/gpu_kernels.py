"""bf16 numerics and timings of the Pallas MoE kernels (gmm, tgmm, router) against their pure-JAX references.

  python benchmarks/gpu_kernels.py                        # ZAYA1-8B shapes, 4k and 16k tokens
  python benchmarks/gpu_kernels.py --tokens 4096 --configs nvidia

Needs a GPU (CUDA or ROCm) and exits with status 2 at once without one. Shapes: D=2048, I=2048 (gate_up
N=4096), 16 experts + skip route, router width 256; tokens are routed uniformly over the 17 classes, so about
1/17 of the rows are skip rows past sum(group_sizes). Prints one Markdown table: median milliseconds and
TFLOP/s (useful FLOPs: routed rows only) of each kernel and its reference, and the kernel's largest
difference from the reference relative to the reference's largest |value| (router: the share of routes that
agree, then the logits' difference).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pallas_kernels.gmm import NVIDIA_LAUNCH, PORTABLE_LAUNCH, gmm, gmm_reference, tgmm, tgmm_reference  # noqa: E402
from pallas_kernels.router import router_reference, zaya_router  # noqa: E402

D, I, E, R = 2048, 2048, 16, 256
C = E + 1
EPS = 1e-5
BF16 = jnp.bfloat16
CONFIGS = {  # name -> launch parameters of the grouped matmuls (gmm's two defaults) and of the router
    "portable": {"gmm": PORTABLE_LAUNCH,
                 "router": dict(block_t=64, block_d=64, block_r=64, num_warps=4, num_stages=2)},
    "nvidia": {"gmm": NVIDIA_LAUNCH,
               "router": dict(block_t=128, block_d=64, block_r=64, num_warps=8, num_stages=2)},
}


def require_gpu():
  try:
    backend = jax.default_backend()
  except RuntimeError as e:  # a broken accelerator plugin
    sys.exit(f"gpu_kernels.py: no usable JAX backend ({e})")
  if backend != "gpu":
    print(f"gpu_kernels.py: needs a GPU, JAX's default backend is {backend!r}", file=sys.stderr)
    sys.exit(2)


def median_ms(fn, *args, reps=10, rounds=5):
  """Median over `rounds` of the mean time of `reps` back-to-back calls, after a compile and a warm-up."""
  jax.block_until_ready(fn(*args))
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(reps):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / reps * 1e3)
  return statistics.median(times)


def rel_err(actual, expected):
  """max |actual - expected| / max |expected| over all leaves, in float64."""
  worst = 0.0
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    worst = max(worst, float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-30)))
  return worst


def routed_group_sizes(tokens, key):
  """Token counts of the 16 experts when tokens pick one of 17 classes uniformly (the 17th is the skip)."""
  classes = jax.random.randint(key, (tokens,), 0, C)
  return jnp.bincount(classes, length=C)[:E].astype(jnp.int32)


def _with_groups(impl, group_sizes, **kwargs):
  """jit of (a, b) -> impl(a, b, group_sizes, **kwargs)."""
  return jax.jit(lambda a, b: impl(a, b, group_sizes, **kwargs))


def _fwd_bwd(impl, group_sizes, **kwargs):
  """jit of (lhs, rhs, dout) -> (out, dlhs, drhs) through impl's VJP."""
  def run(lhs, rhs, dout):
    out, vjp = jax.vjp(lambda a, b: impl(a, b, group_sizes, **kwargs), lhs, rhs)
    return (out, *vjp(dout))
  return jax.jit(run)


def gmm_rows(tokens, key, config_name):
  """Rows for the grouped matmuls: gate_up fwd, down fwd, gate_up fwd+bwd, and tgmm alone."""
  cfg = CONFIGS[config_name]["gmm"]
  k = jax.random.split(key, 6)
  gs = routed_group_sizes(tokens, k[0])
  routed = int(gs.sum())
  x = jax.random.normal(k[1], (tokens, D), BF16)
  act = jax.random.normal(k[5], (tokens, I), BF16)  # the SwiGLU activations entering down_proj
  w_gate_up = (jax.random.normal(k[2], (E, D, 2 * I), BF16) * D ** -0.5).astype(BF16)
  w_down = (jax.random.normal(k[3], (E, I, D), BF16) * I ** -0.5).astype(BF16)
  dout = jax.random.normal(k[4], (tokens, 2 * I), BF16)
  flops = 2 * routed * D * 2 * I
  return [
      (f"gmm gate_up [{D}->{2 * I}]", flops, _with_groups(gmm, gs, **cfg), _with_groups(gmm_reference, gs),
       (x, w_gate_up)),
      (f"gmm down [{I}->{D}]", 2 * routed * I * D, _with_groups(gmm, gs, **cfg), _with_groups(gmm_reference, gs),
       (act, w_down)),
      ("gmm gate_up fwd+bwd", 3 * flops, _fwd_bwd(gmm, gs, **cfg), _fwd_bwd(gmm_reference, gs),
       (x, w_gate_up, dout)),
      (f"tgmm gate_up [{E},{D},{2 * I}]", flops, _with_groups(tgmm, gs, num_groups=E, **cfg),
       _with_groups(tgmm_reference, gs, num_groups=E), (x, dout)),
  ]


def router_inputs(tokens, key):
  k = jax.random.split(key, 11)
  normal = lambda i, shape, scale: (jax.random.normal(k[i], shape, jnp.float32) * scale).astype(BF16)  # noqa: E731
  params = {"down_proj_kernel": normal(0, (D, R), D ** -0.5), "down_proj_bias": normal(1, (R,), 0.02),
            "router_states_scale": normal(2, (R,), 0.5) + 1, "norm": {"weight": normal(3, (R,), 0.1) + 1},
            "fc1_kernel": normal(4, (R, R), R ** -0.5), "fc1_bias": normal(5, (R,), 0.02),
            "fc2_kernel": normal(6, (R, R), R ** -0.5), "fc2_bias": normal(7, (R,), 0.02),
            "out_proj_kernel": normal(8, (R, C), 2 * R ** -0.5),
            "balancing_biases": jnp.zeros((C,), jnp.float32).at[-1].set(-1.0)}
  return jax.random.normal(k[9], (tokens, D), BF16), jax.random.normal(k[10], (tokens, R), BF16), params


def router_row(tokens, key, config_name):
  x, carry, params = router_inputs(tokens, key)
  kernel = jax.jit(functools.partial(zaya_router, eps=EPS, use_eda=True, **CONFIGS[config_name]["router"]))
  reference = jax.jit(functools.partial(router_reference, eps=EPS, use_eda=True))
  flops = 2 * tokens * (D * R + 2 * R * R + R * C)
  return "router fwd (EDA)", flops, kernel, reference, (x, carry, params)


def numerics(label, got, want):
  """The error column: relative max difference; for the router, route agreement and logits difference."""
  if label.startswith("router"):
    return f"routes {float(jnp.mean(got[0] == want[0])):.4f}, logits {rel_err(got[2], want[2]):.1e}"
  return f"{rel_err(got, want):.1e}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
  args = parser.parse_args()
  require_gpu()
  print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}", flush=True)
  print("| kernel | tokens | config | ms | TFLOP/s | reference ms | reference TFLOP/s | rel. err. vs reference |")
  print("|---|---:|---|---:|---:|---:|---:|---|")
  key = jax.random.key(0)
  for tokens in args.tokens:
    for config_name in args.configs:
      for label, flops, kernel, reference, operands in [*gmm_rows(tokens, key, config_name),
                                                        router_row(tokens, key, config_name)]:
        err = numerics(label, kernel(*operands), reference(*operands))
        ms, ref_ms = median_ms(kernel, *operands), median_ms(reference, *operands)
        print(f"| {label} | {tokens} | {config_name} | {ms:.3f} | {flops / ms / 1e9:.1f} | {ref_ms:.3f} | "
              f"{flops / ref_ms / 1e9:.1f} | {err} |", flush=True)


if __name__ == "__main__":
  main()
