"""Peak host memory of load_hf_checkpoint relative to the checkpoint size (streaming check).

  python benchmarks/load_memory.py [--hidden 384 --layers 2 12 24 --experts 16]

Writes random fp32 checkpoints in a child process, loads each in a fresh child process and prints the loader's
peak RSS growth next to the size of the weights. The growth is a fixed runtime cost (tracing, compiling)
plus the weights; the marginal column (against the first row) is ~1 for a streaming loader and ~2 for one
that reads everything before stacking the layers.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

_WRITE = """
import sys, jax, numpy as np
from zaya_jax import ZayaConfig, init_params, save_hf_checkpoint
cfg = ZayaConfig(**__import__('json').loads(sys.argv[2]))
save_hf_checkpoint(sys.argv[1], cfg, init_params(cfg, jax.random.key(0)), max_shard_bytes=64 * 2**20)
"""

_LOAD = """
import resource, sys, json, jax
from zaya_jax import load_hf_checkpoint
import jax.numpy as jnp
jnp.zeros(1).block_until_ready()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
config, params = load_hf_checkpoint(sys.argv[1])
jax.block_until_ready(params)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
nbytes = sum(x.nbytes for x in jax.tree.leaves(params))
print(json.dumps({"weights_bytes": nbytes, "peak_growth_bytes": (peak - base) * 1024}))
"""


def measure(model_kwargs: dict) -> dict:
  """{"weights_bytes", "peak_growth_bytes"} of loading a random fp32 checkpoint of this architecture."""
  with tempfile.TemporaryDirectory() as path:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", _WRITE, path, json.dumps(model_kwargs)], check=True, env=env)
    out = subprocess.run([sys.executable, "-c", _LOAD, path], check=True, env=env, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def arch(hidden: int, layers: int, experts: int) -> dict:
  return dict(vocab_size=1024, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, moe_intermediate_size=2 * hidden, num_experts=experts,
              router_hidden_size=64)


def marginal_ratio(small: dict, large: dict) -> float:
  """Extra peak memory per extra byte of weights between two loads (fixed runtime overheads cancel)."""
  return (large["peak_growth_bytes"] - small["peak_growth_bytes"]) / (large["weights_bytes"] - small["weights_bytes"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--hidden", type=int, default=384)
  parser.add_argument("--layers", type=int, nargs="+", default=[2, 12, 24])
  parser.add_argument("--experts", type=int, default=16)
  args = parser.parse_args()
  print("| layers | weights (MiB) | loader peak RSS growth (MiB) | marginal bytes per weight byte |")
  print("|---:|---:|---:|---:|")
  first = None
  for layers in args.layers:
    result = measure(arch(args.hidden, layers, args.experts))
    marginal = f"{marginal_ratio(first, result):.2f}" if first else "-"
    first = first or result
    print(f"| {layers} | {result['weights_bytes'] / 2**20:.0f} | {result['peak_growth_bytes'] / 2**20:.0f} | "
          f"{marginal} |")


if __name__ == "__main__":
  main()
