"""The toy benchmark table: single rollout, majority vote and Markovian RSA on held-out built-in problems.

  python benchmarks/toy_eval.py --checkpoint=/tmp/post/sft
  python benchmarks/toy_eval.py --checkpoint=/tmp/pre/tiny --prompt_format=plain   # a pretrained-only model

One Markovian RSA run (N samples, C candidates, T rounds, budget β for every round, tail τ) over `--count`
held-out problems per family and difficulty. Its round 0 is N independent samples of each question, so the
single-rollout (avg@N) and majority-vote (maj@N) rows score round 0 and the RSA rows score round T: all rows
share one set of draws (a paired comparison), and every number carries a 95% bootstrap interval over problems.
Generated tokens per problem follow the ZAYA1 accounting (all rollouts, all rounds so far). With --output the
run's records, summary and report are written as `experiments/evaluate.py` writes them.
"""

import argparse
import dataclasses
import time

from zaya_jax.data import MATH_FAMILIES
from zaya_jax.evaluation import (PlainTemplate, evaluate, get_benchmark, get_preset, run_summary, summarize,
                                 toy_problems, write_report, write_run)
from zaya_jax.loading import load_model
from zaya_jax.sampling import Sampling


def _row(method: str, summary: dict, metric: str) -> str:
  s = summary["scores"][metric]
  return (f"| {method} | {metric} | {s['mean']:.1f} [{s['low']:.1f}, {s['high']:.1f}] | "
          f"{summary['generated_tokens_per_problem']:,.0f} |")


def table(records: list[dict], samples: int) -> str:
  """The Markdown table of single / majority / Markovian RSA scores of one RSA run's records."""
  single, rsa = summarize(records, round_index=0), summarize(records)
  rounds = len(records[0]["rounds"]) - 1
  lines = ["| Method | Metric | Accuracy % [95% CI] | Generated tokens / problem |", "|---|---|---|---|",
           _row("single rollout (round 0)", single, f"avg@{samples}"),
           _row("majority vote (round 0)", single, f"maj@{samples}"),
           _row(f"Markovian RSA (round {rounds})", rsa, f"avg@{samples}"),
           _row(f"Markovian RSA + majority vote (round {rounds})", rsa, f"maj@{samples}")]
  return "\n".join(lines)


def by_difficulty(records: list[dict], samples: int) -> str:
  """Single / majority / RSA accuracy (percent) per difficulty."""
  lines = ["| Difficulty | Problems | single avg | majority | RSA avg |", "|---|---|---|---|---|"]
  for difficulty in sorted({r["tags"]["difficulty"] for r in records}):
    subset = [r for r in records if r["tags"]["difficulty"] == difficulty]
    single, rsa = summarize(subset, round_index=0, resamples=1), summarize(subset, resamples=1)
    lines.append(f"| {difficulty} | {len(subset)} | {single['scores'][f'avg@{samples}']['mean']:.1f} | "
                 f"{single['scores'][f'maj@{samples}']['mean']:.1f} | {rsa['scores'][f'avg@{samples}']['mean']:.1f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--checkpoint", required=True, help="HF-format directory or zaya_jax training workdir")
  parser.add_argument("--prompt_format", choices=["chat", "plain"], default="chat",
                      help="'plain' = 'Problem: ...\\nSolution:' for pretrained-only models")
  parser.add_argument("--families", default=",".join(MATH_FAMILIES))
  parser.add_argument("--difficulties", default="1,2")
  parser.add_argument("--count", type=int, default=5, help="held-out problems per family and difficulty")
  preset = get_preset("toy_rsa")
  parser.add_argument("--samples", type=int, default=preset.samples, help="N: rollouts per round")
  parser.add_argument("--candidates", type=int, default=preset.candidates, help="C")
  parser.add_argument("--rounds", type=int, default=preset.rounds, help="T: aggregation rounds after round 0")
  parser.add_argument("--budget", type=int, default=preset.budget, help="beta: new tokens per rollout")
  parser.add_argument("--tail", type=int, default=preset.tail, help="tau: tail tokens per candidate")
  parser.add_argument("--temperature", type=float, default=preset.sampling.temperature)
  parser.add_argument("--problems_per_batch", type=int, default=10, help="problems sampled together")
  parser.add_argument("--prefill_chunk", type=int, default=128,
                      help="prefill prompts in chunks of this many tokens (bounds prefill attention memory)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default=None, help="also write results.jsonl, summary.json and the report here")
  args = parser.parse_args()

  problems = toy_problems(families=args.families.split(","), difficulties=[int(d) for d in
                                                                           args.difficulties.split(",")],
                          count=args.count, seed=args.seed)
  custom = dataclasses.replace(preset, samples=args.samples, candidates=args.candidates, rounds=args.rounds,
                               budget=args.budget, tail=args.tail, sampling=Sampling(temperature=args.temperature))
  preset = custom if custom == preset else dataclasses.replace(custom, name="toy_rsa_custom")
  model = load_model(args.checkpoint)
  print(f"{args.checkpoint} (step {model.step}): {len(problems)} held-out problems, {preset.describe()}, "
        f"temperature {args.temperature}, prompt format {args.prompt_format}", flush=True)
  start = time.perf_counter()
  records = evaluate(model, "math", problems, preset, seed=args.seed,
                     problems_per_batch=args.problems_per_batch,
                     template=PlainTemplate() if args.prompt_format == "plain" else None,
                     truncate_at=PlainTemplate.STOP_TEXT if args.prompt_format == "plain" else None,
                     rsa_fields={"prefill_chunk": args.prefill_chunk},
                     progress=lambda line: print(line, flush=True))
  print(f"\n{table(records, args.samples)}\n\n{by_difficulty(records, args.samples)}\n\n"
        f"wall time {time.perf_counter() - start:.0f}s")
  if args.output:
    summary = run_summary(get_benchmark("toy"), preset, summarize(records, seed=args.seed),
                          checkpoint=args.checkpoint, step=model.step, seed=args.seed,
                          prompt_format=args.prompt_format)
    write_run(args.output, records, summary)
    print("report:", *write_report(args.output))


if __name__ == "__main__":
  main()
