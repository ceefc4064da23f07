"""Decode and prefill throughput of `zaya_jax.sampling.generate` against transformers' `generate`, and the
wall time of Markovian RSA (N=16) against one trace of the same sequential length, on configs/bench_small.py.

  python benchmarks/decode.py [--prompt 128] [--new 128] [--batches 1 8] [--repeats 3] [--torch-threads N]
                              [--torch-device cuda]   # on a GPU: transformers on the same GPU as JAX

Both sides run the same fp32 weights (written with save_hf_checkpoint, read with from_pretrained), greedy,
no stop token, in one process. Throughputs are taken from whole `generate` calls so that both sides are
measured the same way: prefill tokens/s = B·P / t(1 new token); decode tokens/s = B·(G-1) / (t(G) - t(1)).
Compile time is excluded (each program runs once before timing); the best of --repeats is reported.
The machine's load average is printed first: transformers' threads slow down far more than XLA's when other
processes compete for the cores, so ratios measured on a busy machine overstate the speed-up (--torch-threads 1
keeps torch from waiting on a descheduled thread of its own).
RSA: N rollouts of β tokens in T+1 rounds (C candidates, tail τ) against one batch-1 trace of (T+1)·β tokens,
the same number of sequential decode steps; the time of each round is printed too (an aggregation round
prefills N prompts of question + template + C·τ tokens before it decodes).
"""

import argparse
import os
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from configs import bench_small
from zaya_jax import ZayaConfig, init_params, moe, save_hf_checkpoint
from zaya_jax.data import ByteTokenizer
from zaya_jax.sampling import (GREEDY, AggregationTemplate, ByteChatTemplate, PromptBuilder, RSAConfig, Sampling,
                               generate, markovian_rsa)


def best_time(fn, repeats):
  fn()  # compile / warm up
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def ours(params, config, ids, new):
  return lambda: jax.block_until_ready(generate(params, config, ids, max_new_tokens=new, sampling=GREEDY,
                                                stop_tokens=()).tokens)


def reference(model, ids, new):
  ids = torch.as_tensor(ids, device=model.device)

  def run():
    with torch.no_grad():
      model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                     do_sample=False, eos_token_id=None, pad_token_id=0)
    if model.device.type == "cuda":  # generate returns before the GPU finishes
      torch.cuda.synchronize()
  return run


def throughput_rows(params, config, model, args):
  rows = []
  for batch in args.batches:
    ids = np.random.RandomState(batch).randint(3, config.vocab_size, (batch, args.prompt)).astype(np.int32)
    row = {"batch": batch}
    sides = (("zaya_jax", lambda n: ours(params, config, ids, n)), ("transformers", lambda n: reference(model, ids, n)))
    for name, make in sides:
      t1 = best_time(make(1), args.repeats)
      tg = best_time(make(args.new), args.repeats)
      row[name] = (batch * args.prompt / t1, batch * (args.new - 1) / (tg - t1))
    rows.append(row)
  return rows


def rsa_row(params, config, args):
  rsa = RSAConfig(population=16, candidates=4, rounds=2, budget=args.rsa_budget, tail=args.rsa_tail,
                  sampling=Sampling(vocab_limit=ByteTokenizer.vocab_size))
  builder = PromptBuilder(ByteTokenizer(), ByteChatTemplate(), "Compute (8 - 3) + 4.", AggregationTemplate())
  stop = ()  # full-length rollouts: the comparison is about sequential steps, not about where a model stops
  round_times = []

  def run_rsa():
    round_times.clear()
    start = time.perf_counter()
    for _ in markovian_rsa(params, config, builder, rsa, jax.random.key(0), stop_tokens=stop):
      round_times.append(time.perf_counter() - start)
      start = time.perf_counter()

  length = (rsa.rounds + 1) * rsa.budget
  question = np.asarray([builder.initial()], np.int32)
  single = lambda: jax.block_until_ready(generate(params, config, question, max_new_tokens=length,
                                                  key=jax.random.key(0), sampling=rsa.sampling,
                                                  stop_tokens=stop).tokens)
  t_rsa = best_time(run_rsa, 1)
  width = len(builder.aggregation([[0] * rsa.tail] * rsa.candidates))
  return rsa, t_rsa, list(round_times), width, best_time(single, 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompt", type=int, default=128)
  parser.add_argument("--new", type=int, default=128)
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--rsa-budget", type=int, default=128)
  parser.add_argument("--rsa-tail", type=int, default=32)
  parser.add_argument("--torch-threads", type=int, default=0, help="0 = torch's default")
  parser.add_argument("--torch-device", default="cpu", help="where transformers runs, e.g. cuda")
  args = parser.parse_args()
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  config = ZayaConfig.from_dict(bench_small.get_config().model.to_dict())
  params = init_params(config, jax.random.key(0))
  with tempfile.TemporaryDirectory() as tmp:
    save_hf_checkpoint(tmp, config, params)
    model = transformers.ZayaForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval().to(args.torch_device)
  E = config.num_experts
  auto = f"{moe.resolve_impl(config.moe_impl, E, E)} up to {E} tokens a call, else " \
         f"{moe.resolve_impl(config.moe_impl, E + 1, E)}"
  print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, torch on {args.torch_device} with {torch.get_num_threads()} threads, "
        f"moe_impl {config.moe_impl} ({auto}); prompt {args.prompt}, "
        f"{args.new} new tokens, fp32, greedy")
  print("| batch | prefill tok/s zaya_jax | prefill tok/s transformers | decode tok/s zaya_jax | "
        "decode tok/s transformers | decode speed-up |")
  print("|---:|---:|---:|---:|---:|---:|")
  for row in throughput_rows(params, config, model, args):
    (p_ours, d_ours), (p_ref, d_ref) = row["zaya_jax"], row["transformers"]
    print(f"| {row['batch']} | {p_ours:,.0f} | {p_ref:,.0f} | {d_ours:,.0f} | {d_ref:,.0f} | {d_ours / d_ref:.1f}x |")
  rsa, t_rsa, rounds, width, t_single = rsa_row(params, config, args)
  print(f"\nMarkovian RSA N={rsa.population} C={rsa.candidates} T={rsa.rounds} beta={rsa.budget} tau={rsa.tail}: "
        f"{t_rsa:.2f} s (rounds: {', '.join(f'{t:.2f}' for t in rounds)} s; aggregation prompts {width} tokens); "
        f"one trace of {(rsa.rounds + 1) * rsa.budget} tokens: {t_single:.2f} s ({t_rsa / t_single:.2f}x); "
        f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
