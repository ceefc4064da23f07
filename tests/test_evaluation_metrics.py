"""avg@k, unbiased pass@k and maj@k against brute-force enumeration of k-subsets; bootstrap intervals."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from zaya_jax.evaluation import metrics


def _brute_pass(correct, k):
  subsets = list(itertools.combinations(correct, k))
  return Fraction(sum(any(s) for s in subsets), len(subsets))


def _brute_majority(labels, cluster_correct, k):
  """Mean over all k-subsets of the tie-split majority score; labels[i] is sample i's cluster or None."""
  total = Fraction(0)
  subsets = list(itertools.combinations(labels, k))
  for subset in subsets:
    counts = {}
    for label in subset:
      if label is not None:
        counts[label] = counts.get(label, 0) + 1
    if counts:
      top = max(counts.values())
      winners = [label for label, count in counts.items() if count == top]
      total += Fraction(sum(cluster_correct[w] for w in winners), len(winners))
  return total / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration(n):
  for c in range(n + 1):
    correct = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
      assert metrics.pass_at_k(n, c, k) == pytest.approx(float(_brute_pass(correct, k)), abs=1e-12)
    assert metrics.pass_at_k(n, c, 1) == pytest.approx(c / n)  # avg@n is the unbiased pass@1


@pytest.mark.parametrize("sizes, correct, unanswered", [
    ([3, 2, 2], [False, True, False], 1),
    ([2, 2], [True, False], 0),  # exact ties
    ([1, 1, 1, 1], [False, False, True, False], 2),
    ([4, 1], [False, True], 3),
    ([2, 3, 1], [True, True, False], 1),  # two clusters graded correct (non-transitive equivalence)
    ([5], [True], 0),
])
def test_majority_at_k_equals_enumeration(sizes, correct, unanswered):
  labels = [j for j, m in enumerate(sizes) for _ in range(m)] + [None] * unanswered
  n = len(labels)
  for k in range(1, n + 1):
    expected = _brute_majority(labels, correct, k)
    assert metrics.majority_at_k(sizes, correct, unanswered, k) == pytest.approx(float(expected), abs=1e-12)


def test_majority_over_all_samples_splits_ties():
  assert metrics.majority_at_k([2, 2, 1], [True, False, False], 0, 5) == pytest.approx(0.5)
  assert metrics.majority_at_k([3, 2], [False, True], 4, 9) == 0.0
  assert metrics.majority_at_k([], [], 3, 2) == 0.0  # nobody answered


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.pass_at_k(4, 1, 5), "k must lie"),
    (lambda: metrics.pass_at_k(4, 5, 1), "correct count"),
    (lambda: metrics.majority_at_k([2], [True, False], 0, 1), "one entry per cluster"),
    (lambda: metrics.majority_at_k([0], [True], 0, 1), "sizes must be"),
    (lambda: metrics.bootstrap_ci([]), "non-empty"),
])
def test_bad_arguments_are_named(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_bootstrap_is_deterministic_and_brackets_the_mean():
  scores = np.random.default_rng(0).random(40)
  a = metrics.bootstrap_ci(scores, seed=3)
  assert a == metrics.bootstrap_ci(scores, seed=3)
  assert a != metrics.bootstrap_ci(scores, seed=4)
  assert a.low < a.mean < a.high and a.mean == pytest.approx(scores.mean())
  # The percentile interval of the mean is about +-1.96 standard errors.
  se = scores.std() / np.sqrt(len(scores))
  assert a.high - a.low == pytest.approx(2 * 1.96 * se, rel=0.2)
  assert metrics.bootstrap_ci([0.5] * 7) == (0.5, 0.5, 0.5)
