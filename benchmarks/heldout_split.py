"""Did a stage's held-out gain come from guessing? Its change split by the final checkpoint's frequent answers.

  python benchmarks/heldout_split.py --stage=/tmp/post/rl_warmup [--top 3]

Reads a finished stage's held-out scores (heldout_init.json and summary.json) and its held-out config, and prints
the correct greedy replies (and summed avg@k solve rates, when scored) before and after the stage on two sets of
problems: those whose reference answer is one of the final checkpoint's `--top` most frequent greedy answers,
and the rest (`zaya_jax.posttrain.heldout.frequent_answer_split`). A policy that learned to guess a frequent
answer ("0", "10") gains on the first set only; a gain on the rest is one a guess cannot make.
"""

import argparse
import os

from zaya_jax.posttrain import heldout, stages


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--stage", required=True, help="a finished stage's workdir")
  parser.add_argument("--top", type=int, default=3, help="how many of the most frequent answers")
  args = parser.parse_args()

  read = lambda name: stages.read_json(os.path.join(args.stage, name))  # noqa: E731
  init, summary, config = read(stages.INIT_HELDOUT_FILE), read(stages.SUMMARY_FILE), read("config.json")
  if init is None or summary is None or config is None:
    raise SystemExit(f"{args.stage} is not a finished stage with an init score: it needs config.json, "
                     f"{stages.INIT_HELDOUT_FILE} and {stages.SUMMARY_FILE}")
  cfg = config["heldout"]
  references = [r["answer"] for r in heldout.heldout_records(cfg["families"], cfg["difficulties"], cfg["count"],
                                                             cfg["seed"])]
  split = heldout.frequent_answer_split(init, summary["heldout"], references, args.top)
  print(f"{args.stage}: the final checkpoint's {args.top} most frequent answers {split['answers']}\n")
  print("| problems | count | greedy correct: before -> after | avg@k solved (sum of rates): before -> after |")
  print("|---|---|---|---|")
  for name, label in (("frequent", "answer among them"), ("rest", "the rest")):
    part = split[name]
    sampled = " -> ".join(f"{v:.1f}" for v in part["sampled"]) if "sampled" in part else ""
    print(f"| {label} | {part['problems']} | {part['greedy'][0]} -> {part['greedy'][1]} | {sampled} |")


if __name__ == "__main__":
  main()
