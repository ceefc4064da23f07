"""How much RL could raise a checkpoint's greedy held-out accuracy by sharpening: greedy against k samples.

  python benchmarks/rl_headroom.py --checkpoint=/tmp/post/sft [--count 400] [--samples 16] [--temperature 0.5]

On the first `--count` held-out problems (zaya_jax/posttrain/heldout.py, configs/posttrain `heldout_config`) it
decodes one greedy reply and k sampled ones per problem and prints greedy accuracy, avg@k, pass@k and maj@k
(exact, ties split; zaya_jax.evaluation.metrics.majority_at_k), the histogram of per-problem sampled solve rates,
and two counts that bound what sharpening can do: problems the greedy reply gets wrong although the sampled
replies solve them at least `--sharp` of the time (RL that makes the policy's frequent correct reply its greedy
one gains these), and problems the greedy reply gets right with a sampled rate below 0.5 (small weight changes
flip these either way). When maj@k is close to greedy and the first count is small, RL can only gain by
teaching the model to compute what it now gets wrong: far more correct samples than sharpening needs.
"""

import argparse
import collections

import numpy as np

from configs.posttrain import heldout_config
from zaya_jax.evaluation.metrics import majority_at_k
from zaya_jax.evaluation.scoring import cluster, equivalence
from zaya_jax.loading import load_model
from zaya_jax.posttrain import heldout
from zaya_jax.rewards.math import extract_answer, math_equal, math_reward

BINS = (0.0, 1e-9, 0.125, 0.25, 0.5, 0.75, 1.0 + 1e-9)


def majority(answers: list[str | None], reference: str) -> float:
  """maj@n of one problem's n answers (None: no answer; equivalent forms vote together): the expected score
  of the majority answer, ties split."""
  labels = cluster(answers, equivalence("math"))
  sizes = collections.Counter(label for label in labels if label is not None)
  if not sizes:
    return 0.0
  first = {label: answers[labels.index(label)] for label in sizes}
  return majority_at_k([sizes[label] for label in sizes], [math_equal(first[label], reference) for label in sizes],
                       labels.count(None), len(answers))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help="HF-format directory or training workdir")
  parser.add_argument("--count", type=int, default=400, help="held-out problems")
  parser.add_argument("--samples", type=int, default=16, help="k sampled replies per problem")
  parser.add_argument("--temperature", type=float, default=0.5, help="of the sampled replies")
  parser.add_argument("--sharp", type=float, default=0.25, help="sampled rate counted as sharpening headroom")
  args = parser.parse_args()

  cfg = heldout_config().to_dict()
  model = load_model(args.checkpoint)
  records = heldout.heldout_records(cfg["families"], cfg["difficulties"], args.count, cfg["seed"])
  prompts = [model.chat_template.user_prompt(model.tokenizer, [r["problem"]]) for r in records]
  decode = model.tokenizer.decode
  greedy = heldout.greedy_replies(model.params, model.config, model.tokenizer, prompts,
                                  max_new_tokens=cfg["max_new_tokens"], batch_size=cfg["batch_size"])
  sampled = heldout.sampled_replies(model.params, model.config, model.tokenizer, prompts, k=args.samples,
                                    temperature=args.temperature, seed=cfg["seed"],
                                    max_new_tokens=cfg["max_new_tokens"], batch_size=cfg["batch_size"])
  greedy_ok = np.array([math_reward(decode(ids), r["answer"]) == 1.0 for (ids, _), r in zip(greedy, records)])
  answers = [[extract_answer(decode(ids)) for ids in replies] for replies in sampled]
  rates = np.array([np.mean([a is not None and math_equal(a, r["answer"]) for a in answers_of])
                    for answers_of, r in zip(answers, records)])
  maj = np.array([majority(answers_of, r["answer"]) for answers_of, r in zip(answers, records)])

  k, n = args.samples, args.count
  print(f"{args.checkpoint}: {n} held-out problems, {k} samples at T={args.temperature:g}\n")
  print("| greedy | avg@k | pass@k | maj@k |\n|---|---|---|---|")
  print(f"| {greedy_ok.mean():.1%} | {rates.mean():.1%} | {(rates > 0).mean():.1%} | {maj.mean():.1%} |\n")
  counts, _ = np.histogram(rates, bins=BINS)
  labels = ["0", "(0, 1/8)", "[1/8, 1/4)", "[1/4, 1/2)", "[1/2, 3/4)", "[3/4, 1]"]
  print("| sampled solve rate | " + " | ".join(labels) + " |\n" + "|---" * (len(labels) + 1) + "|")
  print("| problems | " + " | ".join(str(c) for c in counts) + " |\n")
  headroom = int(np.sum(~greedy_ok & (rates >= args.sharp)))
  fragile = int(np.sum(greedy_ok & (rates < 0.5)))
  print(f"greedy wrong, sampled rate >= {args.sharp:g}: {headroom} ({headroom / n:.1%}; sharpening headroom)")
  print(f"greedy right, sampled rate < 0.5: {fragile} ({fragile / n:.1%}; flip either way)")


if __name__ == "__main__":
  main()
