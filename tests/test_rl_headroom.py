"""benchmarks/rl_headroom.py: the per-problem majority vote it reports (maj@n, ties split)."""

import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "rl_headroom.py")
_spec = importlib.util.spec_from_file_location("rl_headroom", _PATH)
rh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rh)


def test_majority_scores_the_most_frequent_answer_and_splits_ties():
  assert rh.majority(["3", "3", "4", None], "3") == 1.0
  assert rh.majority(["3", "4", "4", None], "3") == 0.0
  assert rh.majority(["3", "4"], "3") == pytest.approx(0.5)
  assert rh.majority(["1/2", "0.5", "4"], "\\frac{1}{2}") == 1.0  # equivalent forms vote together
  assert rh.majority([None, None], "3") == 0.0
