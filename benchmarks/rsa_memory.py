"""Markovian RSA memory is bounded by construction: compiled memory and peak RSS for T=1 vs T=4 rounds, and for
a Delethink-chunked rollout budget of β vs 4β.

  python benchmarks/rsa_memory.py [--population 8] [--budget 128] [--tail 32] [--chunk 64] [--carry 32]
      [--prefill-chunk 64]

Each setting runs in a fresh process (peak RSS is per process) on configs/bench_small.py with random weights
and full-length rollouts (no stop token). "state tokens" is the decode-state capacity per sequence of the
aggregation-round program; "temp MiB" is XLA's temp buffer size for that compiled program
(`compiled_generate(...).memory_analysis()`); "programs" counts the distinct compiled `generate` programs.
The prompt's prefill attention dominates temp memory; --prefill-chunk bounds it by chunk x state tokens.
"""

import argparse
import json
import resource
import subprocess
import sys

import jax
import numpy as np

from configs import bench_small
from zaya_jax import ZayaConfig, init_params
from zaya_jax.data import ByteTokenizer
from zaya_jax.sampling import (AggregationTemplate, ByteChatTemplate, Delethink, PromptBuilder, RSAConfig, Sampling,
                               compiled_generate, generation, markovian_rsa)


def measure(args, rounds, budget, chunked):
  config = ZayaConfig.from_dict(bench_small.get_config().model.to_dict())
  params = init_params(config, jax.random.key(0))
  chunking = Delethink(args.chunk, args.carry) if chunked else None
  rsa = RSAConfig(population=args.population, candidates=4, rounds=rounds, budget=budget, tail=args.tail,
                  chunking=chunking, sampling=Sampling(vocab_limit=ByteTokenizer.vocab_size),
                  prefill_chunk=args.prefill_chunk)
  builder = PromptBuilder(ByteTokenizer(), ByteChatTemplate(), "Compute (8 - 3) + 4.", AggregationTemplate())
  generated = sum(int(r.rollouts.lengths.sum())
                  for r in markovian_rsa(params, config, builder, rsa, jax.random.key(0), stop_tokens=()))
  # The largest program: an aggregation round, or its continuation chunks when chunked.
  width = len(builder.aggregation([[0] * rsa.tail] * rsa.candidates))
  if chunked:
    width, new = width + chunking.keep_head + chunking.carry, chunking.chunk_size - chunking.carry
  else:
    new = budget
  ids = np.zeros((rsa.population, width), np.int32)
  compiled = compiled_generate(params, config, ids, prompt_mask=np.ones_like(ids), max_new_tokens=new,
                               key=jax.random.key(0), sampling=rsa.sampling, stop_tokens=(), pad_id=0,
                               prefill_chunk=rsa.prefill_chunk)
  pc = rsa.prefill_chunk
  padded = -(-width // pc) * pc if 0 < pc < width else width  # generate left-pads to whole prefill chunks
  return {"rounds": rounds, "budget": budget, "chunked": chunked, "generated": generated,
          "state_tokens": padded + new - 1, "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
          "programs": generation._generate._cache_size(),
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--population", type=int, default=8)
  parser.add_argument("--budget", type=int, default=128)
  parser.add_argument("--tail", type=int, default=32)
  parser.add_argument("--chunk", type=int, default=64)
  parser.add_argument("--carry", type=int, default=32)
  parser.add_argument("--prefill-chunk", type=int, default=64, help="0 = prefill each prompt in one pass")
  parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "rounds,budget,chunked" in a child process
  args = parser.parse_args()
  if args.one:
    rounds, budget, chunked = (int(v) for v in args.one.split(","))
    print(json.dumps(measure(args, rounds, budget, bool(chunked))))
    return
  settings = [(1, args.budget, 0), (4, args.budget, 0), (1, args.budget, 1), (1, 4 * args.budget, 1)]
  print(f"N={args.population} C=4 tau={args.tail}; chunked: chunk {args.chunk}, carry {args.carry}; "
        f"prefill chunk {args.prefill_chunk}")
  print("| T | beta | chunked | generated tokens | state tokens | temp MiB | programs | peak RSS MiB |")
  print("|---:|---:|---|---:|---:|---:|---:|---:|")
  for setting in settings:
    child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", ",".join(map(str, setting))],
                           capture_output=True, text=True, check=True)
    r = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"| {r['rounds']} | {r['budget']} | {'yes' if r['chunked'] else 'no'} | {r['generated']:,} | "
          f"{r['state_tokens']} | {r['temp_mib']:.2f} | {r['programs']} | {r['peak_rss_mib']:.0f} |", flush=True)


if __name__ == "__main__":
  main()
