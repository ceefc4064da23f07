"""Per-problem score estimators over n scored samples, and bootstrap confidence intervals over problems.

- avg@k (mean@k): the fraction of correct samples, c/n, the unbiased estimate of pass@1 (spec §6.1).
- pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k)/C(n, k), as LiveCodeBench computes it:
  the probability that a uniformly random k-subset of the n samples holds at least one correct one.
- maj@k: the expected score of majority voting over a uniformly random k-subset of the n samples (exact, not
  sampled). Samples are grouped into answer clusters (equivalent answers); a sample without an answer votes
  for nothing; the largest cluster in the subset wins and ties are broken uniformly at random, so a tie
  between a correct and a wrong cluster scores 1/2. With k = n it is the majority vote over all samples.

Benchmark scores are means over problems; `bootstrap_ci` resamples problems with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Estimate(NamedTuple):
  """A mean over problems with its bootstrap confidence interval (all in [0, 1] for accuracies)."""
  mean: float
  low: float
  high: float


def _check_k(n: int, k: int) -> None:
  if not 1 <= k <= n:
    raise ValueError(f"k must lie in [1, n={n}], got k={k}")


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, numerically stable form)."""
  _check_k(n, k)
  if not 0 <= c <= n:
    raise ValueError(f"correct count c must lie in [0, n={n}], got c={c}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_at_k(sizes: Sequence[int], correct: Sequence[bool], unanswered: int, k: int) -> float:
  """Expected majority-vote score over uniformly random k-subsets of n = sum(sizes) + unanswered samples.

  sizes[j] samples gave an answer of cluster j, whose answer is correct iff correct[j]; `unanswered` samples
  gave no answer. Ties between the largest clusters of a subset split the credit evenly; a subset with no
  answer scores 0.
  """
  if len(sizes) != len(correct):
    raise ValueError(f"sizes and correct must have one entry per cluster, got {len(sizes)} and {len(correct)}")
  if any(m < 1 for m in sizes) or unanswered < 0:
    raise ValueError(f"cluster sizes must be >= 1 and unanswered >= 0, got {list(sizes)}, {unanswered}")
  n = sum(sizes) + unanswered
  _check_k(n, k)
  total = 0.0
  for c in (j for j, ok in enumerate(correct) if ok):
    others = [m for j, m in enumerate(sizes) if j != c]
    for x in range(1, min(sizes[c], k) + 1):  # the correct cluster holds x samples of the subset
      ways = _ways_at_most(others, unanswered, x, k - x)
      total += math.comb(sizes[c], x) * float(np.sum(ways / np.arange(1, len(others) + 2)))
  return total / float(math.comb(n, k))


def _ways_at_most(others: Sequence[int], unanswered: int, x: int, s: int) -> np.ndarray:
  """[t] ways to pick s samples from the other clusters and the unanswered ones such that no other cluster
  gets more than x, and exactly t of them get x (a tie with the cluster under consideration)."""
  ways = np.zeros((s + 1, len(others) + 1))  # [picked so far, clusters at x]
  ways[0, 0] = 1.0
  groups = [(unanswered, unanswered + 1, False)] + [(m, min(m, x - 1) + 1, m >= x) for m in others]
  for size, below, can_tie in groups:
    new = np.zeros_like(ways)
    for a in range(min(below, s + 1)):
      new[a:] += math.comb(size, a) * ways[:s + 1 - a]
    if can_tie and x <= s:
      new[x:, 1:] += math.comb(size, x) * ways[:s + 1 - x, :-1]
    ways = new
  return ways[s]


def bootstrap_ci(scores: Sequence[float], *, resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> Estimate:
  """The mean of per-problem `scores` and its percentile bootstrap interval (problems resampled with
  replacement); deterministic given `seed`."""
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 1 or scores.size == 0:
    raise ValueError(f"scores must be a non-empty 1-D sequence (one per problem), got shape {scores.shape}")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
  if resamples < 1:
    raise ValueError(f"resamples must be >= 1, got {resamples}")
  rng = np.random.default_rng(seed)
  means = scores[rng.integers(0, scores.size, (resamples, scores.size))].mean(axis=1)
  low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
  return Estimate(float(scores.mean()), float(low), float(high))
