"""Throughput of the expert FFN of a ZAYA-shaped MoE block under each moe_impl (forward pass).

  python benchmarks/moe_block.py [--tokens 1024 4096] [--impls auto reference ragged_dot] [--experts 16]

Prints a Markdown table: tokens/s and achieved FLOP/s counted on the *active* FLOPs (6·N·D·I for the routed
tokens), next to this machine's dense-matmul FLOP/s measured in the same run ([N, D] x [D, 2I]) and the
speed-up over computing every expert on every token (`reference`). Routing is uniform over the experts with
~1/(E+1) of the tokens on the skip route, as a balanced router gives.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from zaya_jax import moe


def _time(fn, *args, repeats=3):
  jax.block_until_ready(fn(*args))  # compile + warm up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def dense_matmul_flops(n, d, f, dtype):
  a = jnp.ones((n, d), dtype)
  b = jnp.ones((d, f), dtype)
  seconds = _time(jax.jit(lambda a, b: a @ b), a, b)
  return 2 * n * d * f / seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
  parser.add_argument("--impls", nargs="+", default=["auto", "reference", "ragged_dot"])
  parser.add_argument("--experts", type=int, default=16)
  parser.add_argument("--hidden", type=int, default=2048)
  parser.add_argument("--intermediate", type=int, default=2048)
  parser.add_argument("--block-size", type=int, default=128)
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()
  E, D, I, dtype = args.experts, args.hidden, args.intermediate, jnp.dtype(args.dtype)
  k = jax.random.split(jax.random.key(0), 4)
  gate_up = (jax.random.normal(k[0], (E, D, 2 * I)) * 0.02).astype(dtype)
  down = (jax.random.normal(k[1], (E, I, D)) * 0.02).astype(dtype)
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), E={E} D={D} I={I} {dtype.name}, "
        f"block {args.block_size}; auto = {moe.resolve_impl('auto')}")
  print("| tokens | impl | ms | tokens/s | active GFLOP/s | dense matmul GFLOP/s | % of dense | vs reference |")
  print("|---:|---|---:|---:|---:|---:|---:|---:|")
  for n in args.tokens:
    x = jax.random.normal(k[2], (n, D), dtype)
    choice = jax.random.randint(k[3], (n,), 0, E + 1)
    weight = jnp.full((n,), 0.5, dtype)
    routed = int(jnp.sum(choice < E))
    active_flops = 6 * routed * D * I
    dense = dense_matmul_flops(n, D, 2 * I, dtype)
    times = {}
    for impl in args.impls:
      fn = jax.jit(lambda x, c, w, gu, dn, impl=impl: moe.expert_ffn(x, c, w, gu, dn, moe_impl=impl,
                                                                      block_size=args.block_size))
      times[impl] = _time(fn, x, choice, weight, gate_up, down, repeats=1 if impl != "auto" else 3)
    for impl, seconds in times.items():
      speedup = times["reference"] / seconds if "reference" in times else float("nan")
      print(f"| {n} | {impl} | {seconds * 1e3:.0f} | {n / seconds:,.0f} | {active_flops / seconds / 1e9:.1f} | "
            f"{dense / 1e9:.1f} | {100 * active_flops / seconds / dense:.0f}% | {speedup:.1f}x |")


if __name__ == "__main__":
  main()
