"""Checkpoints of an RL run scored on the prompts the run trained on, paired: did it learn what it saw?

  python benchmarks/rl_replay.py --run=/tmp/post/rl_warmup --checkpoints=/tmp/post/sft,/tmp/post/rl_warmup \
      [--steps=1:40]

Redraws the plain prompts of the run's steps with its config.json (`zaya_jax.posttrain.rl.replay`: the same
tasks, G rollouts each with the same sampling keys) and scores every checkpoint on them (a path, or
`WORKDIR@STEP` for one of a workdir's checkpoints). Prints each checkpoint's accuracy over the
steps × P × G rollouts and its change from the first checkpoint with a paired 95% bootstrap interval over
prompts, and the accuracy the run logged on those steps (each step's rollouts sampled by the params of that
moment; stages without aggregation prompts).

A final checkpoint that gains on these prompts but not on held-out problems (summary.json) learned the problems
it was shown without carrying it over (README: a warm-up of 8 prompts per step gained 5.0 points on its prompts
and lost 1.2 held-out avg@8 points; with 64 prompts per step, +4.2 and +1.7).
"""

import argparse
import json
import os

import numpy as np

from zaya_jax.evaluation import bootstrap_ci
from zaya_jax.loading import load_model
from zaya_jax.posttrain import rl


def parse_steps(spec: str, last: int) -> list[int]:
  """ "a:b" -> [a, ..., b] (1-based, inclusive; either end may be left out: 1 and the run's last step)."""
  first, _, end = spec.partition(":")
  steps = list(range(int(first or 1), int(end or last) + 1))
  if not steps or steps[0] < 1 or steps[-1] > last:
    raise ValueError(f"--steps={spec!r} must name steps within 1..{last}")
  return steps


def load(spec: str):
  """ "PATH" or "WORKDIR@STEP" -> LoadedModel."""
  path, _, step = spec.partition("@")
  return load_model(path, step=int(step) if step else None)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", required=True, help="the RL stage's workdir (its config.json and metrics.jsonl)")
  parser.add_argument("--checkpoints", required=True, help="comma-separated paths or WORKDIR@STEP")
  parser.add_argument("--steps", default=":", help="a:b, the run's steps whose prompts to replay")
  args = parser.parse_args()

  config = rl.run_config(args.run)
  steps = parse_steps(args.steps, config.train.steps)
  with open(os.path.join(args.run, "metrics.jsonl")) as f:
    logged = {r["step"]: r["accuracy"] for r in map(json.loads, f) if "accuracy" in r}
  # The logged accuracy counts the aggregation prompts too; it matches the replayed plain ones without them.
  during = [logged[s] for s in steps if s in logged] if config.rl.aggregation_fraction == 0 else []

  rates, names = [], args.checkpoints.split(",")
  for name in names:
    model = load(name)
    correct = rl.replay(config, model.params, model.tokenizer, model.chat_template, steps)
    rates.append(correct.mean(axis=2).reshape(-1))  # per prompt
  S, P, G = len(steps), config.train.prompts_per_step, config.train.rollouts_per_prompt
  print(f"{args.run}: steps {steps[0]}-{steps[-1]}, {S * P} prompts x {G} rollouts at T={config.train.temperature:g}"
        + (f"; the run logged {np.mean(during):.1%} on them" if len(during) == S else "") + "\n")
  print("| checkpoint | accuracy on the run's prompts | change from the first (paired) |\n|---|---|---|")
  for i, (name, r) in enumerate(zip(names, rates)):
    change = ""
    if i:
      e = bootstrap_ci(r - rates[0])
      change = f"{100 * e.mean:+.1f} points [{100 * e.low:+.1f}, {100 * e.high:+.1f}]"
    print(f"| {name} | {r.mean():.1%} | {change} |")


if __name__ == "__main__":
  main()
