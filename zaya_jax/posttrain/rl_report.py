"""RL metrics: the per-step record, the progress line, the stage summary and rl.png.

A step record in metrics.jsonl (beside the router statistics of zaya_jax/train/reporting.py):
  reward_mean, accuracy        over all rollouts of the step (accuracy: the verifier's pass/fail)
  accuracy/<source>            per prompt source (math, code, envs/<name>, behavior, rsa/<source>)
  response_length              mean generated tokens (stop token included)
  truncated_fraction           rollouts that hit the token budget without a stop token
  degenerate_fraction          rollouts the degeneracy canary zeroed
  skipped_groups               fraction of prompt groups dynamic sampling dropped
  masked_fraction              counted response tokens outside the DPPO trust region
  ratio_mean                   mean importance ratio π_θ/π_old over counted tokens (1 when on-policy)
                               (both 0 when dynamic sampling dropped every group)
  loss, lr, grad_norm, updates loss summed over the step's updates, the lr of its first update, the last
                               update's gradient norm, the number of updates (minibatches with a counted group)
  rollout_s, update_s          wall-clock seconds
Held-out evaluations during a stage are separate records {"step", "heldout_accuracy"} (greedy), with
"heldout_avg_at_k" when the held-out config samples.
"""

from __future__ import annotations

import collections
import os

import numpy as np

from zaya_jax.train import reporting

PLOT_FILE = "rl.png"


def solve_rates(sets) -> dict[str, float]:
  """Mean correctness per prompt source over this step's group sets."""
  hits = collections.defaultdict(list)
  for s in sets:
    for task, row in zip(s.tasks, s.correct):
      hits[task.source].extend(row.tolist())
  return {source: float(np.mean(v)) for source, v in sorted(hits.items())}


def step_metrics(sets, totals: dict[str, float]) -> dict[str, float]:
  """The rollout and loss metrics of one step (module docstring); totals: summed loss and LossStats, the last
  update's grad_norm and the number of updates."""
  rewards = np.concatenate([s.rewards.reshape(-1) for s in sets])
  correct = np.concatenate([s.correct.reshape(-1) for s in sets])
  lengths = np.concatenate([s.lengths for s in sets])
  stopped = np.concatenate([s.rollouts.stopped for s in sets])
  kept = np.concatenate([s.kept for s in sets])
  tokens = max(totals["tokens"], 1.0)
  return {
      "reward_mean": float(rewards.mean()), "accuracy": float(correct.mean()),
      **{f"accuracy/{source}": rate for source, rate in solve_rates(sets).items()},
      "response_length": float(lengths.mean()), "truncated_fraction": float(1.0 - stopped.mean()),
      "degenerate_fraction": float(np.concatenate([s.degenerate.reshape(-1) for s in sets]).mean()),
      "skipped_groups": float(1.0 - kept.mean()), "masked_fraction": totals["masked"] / tokens,
      "ratio_mean": totals["ratio_sum"] / tokens, "loss": totals["loss"], "grad_norm": totals["grad_norm"],
      "updates": totals["updates"],
  }


def progress_line(record: dict, total_steps: int) -> str:
  """'step 12/100 | reward 0.312 | acc 31.2% | len 84 | masked 0.0% | skipped 25% | 6.1s+3.2s'."""
  return (f"step {record['step']}/{total_steps} | reward {record['reward_mean']:.3f} | "
          f"acc {100 * record['accuracy']:.1f}% | len {record['response_length']:.0f} | "
          f"masked {100 * record['masked_fraction']:.1f}% | skipped {100 * record['skipped_groups']:.0f}% | "
          f"lr {record['lr']:.1e} | {record['rollout_s']:.1f}s rollout + {record['update_s']:.1f}s update")


SUMMARY_KEYS = ("reward_mean", "accuracy", "response_length", "masked_fraction", "skipped_groups")


def stage_summary(workdir: str, window: int = 10) -> dict:
  """Means of the main step metrics over the first and the last `window` steps of the stage."""
  steps = [r for r in reporting.read_metrics(workdir) if "reward_mean" in r]
  mean = lambda rows, k: float(np.mean([r[k] for r in rows])) if rows else None
  return {"first": {k: mean(steps[:window], k) for k in SUMMARY_KEYS},
          "last": {k: mean(steps[-window:], k) for k in SUMMARY_KEYS}, "window": window}


def _smooth(values, width: int = 5):
  values = np.asarray(values, np.float64)
  if len(values) < width:
    return values
  kernel = np.ones(width) / width
  return np.convolve(np.pad(values, (width // 2, width - 1 - width // 2), mode="edge"), kernel, mode="valid")


def plot(workdir: str) -> str:
  """Writes <workdir>/rl.png: accuracy per source, response length, trust-region and dynamic-sampling
  fractions, and held-out accuracy when the stage evaluated during training."""
  import matplotlib  # imported here: only the end of a stage needs it

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  records = reporting.read_metrics(workdir)
  steps = [r for r in records if "reward_mean" in r]
  evals = [r for r in records if "heldout_accuracy" in r]
  x = [r["step"] for r in steps]
  fig, axes = plt.subplots(1, 4 if evals else 3, figsize=(20 if evals else 15, 4.5))
  for key in ["reward_mean"] + sorted({k for r in steps for k in r if k.startswith("accuracy/")}):
    axes[0].plot([r["step"] for r in steps if key in r], _smooth([r[key] for r in steps if key in r]), label=key)
  axes[0].set(xlabel="step", title="reward and accuracy (5-step mean)")
  axes[0].legend(fontsize="small")
  axes[1].plot(x, [r["response_length"] for r in steps])
  axes[1].set(xlabel="step", ylabel="tokens", title="mean response length")
  for key in ("masked_fraction", "skipped_groups", "truncated_fraction"):
    axes[2].plot(x, [r[key] for r in steps], label=key)
  axes[2].set(xlabel="step", title="fractions")
  axes[2].legend(fontsize="small")
  if evals:  # train.eval_every > 0
    axes[3].plot([r["step"] for r in evals], [r["heldout_accuracy"] for r in evals], "o-", label="greedy")
    sampled = [r for r in evals if "heldout_avg_at_k" in r]
    if sampled:
      axes[3].plot([r["step"] for r in sampled], [r["heldout_avg_at_k"] for r in sampled], "o-", label="avg@k")
    axes[3].set(xlabel="step", ylabel="accuracy", title="held-out accuracy")
    axes[3].legend(fontsize="small")
  fig.tight_layout()
  path = os.path.join(workdir, PLOT_FILE)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
