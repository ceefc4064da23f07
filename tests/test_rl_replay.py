"""benchmarks/rl_replay.py: its --steps ranges (the replay itself: tests/test_posttrain_rl.py)."""

import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "rl_replay.py")
_spec = importlib.util.spec_from_file_location("rl_replay", _PATH)
rr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rr)


def test_parse_steps_takes_inclusive_ranges_with_open_ends():
  assert rr.parse_steps(":", 4) == [1, 2, 3, 4]
  assert rr.parse_steps("2:3", 4) == [2, 3]
  assert rr.parse_steps("3:", 4) == [3, 4]
  assert rr.parse_steps(":2", 4) == [1, 2]


@pytest.mark.parametrize("spec", ["0:2", "2:5", "3:2"])
def test_parse_steps_refuses_steps_outside_the_run(spec):
  with pytest.raises(ValueError, match="within 1..4"):
    rr.parse_steps(spec, 4)
