"""Expert-parallel dispatch index math (the multi-device run is in tests/test_sharding.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from zaya_jax import expert_parallel as ep_lib

E, EP = 4, 2  # 4 experts over 2 devices: experts 0,1 on device 0 and 2,3 on device 1; class 4 = skip


def test_send_plan_hand_checked():
  choice = jnp.array([3, 0, E, 1, 2, 0])
  plan = ep_lib.send_plan(choice, E, EP, cap=3)
  # device 0 gets tokens 1, 3, 5 (experts 0, 1, 0); device 1 gets tokens 0, 4 (experts 1, 0 locally).
  np.testing.assert_array_equal(plan.slot, [3, 0, 6, 1, 4, 2])
  np.testing.assert_array_equal(plan.gather_rows, [1, 3, 5, 0, 4, 6])
  np.testing.assert_array_equal(plan.local_expert, [0, 1, 0, 1, 0, 2])
  assert int(plan.dropped) == 0


@pytest.mark.parametrize("choice", [[E] * 5, [2] * 7, [0, 0, 1, E, 1, 0, 1], [3, 2, 3, 3, E, 2, 3, 2, 3]])
@pytest.mark.parametrize("cap_factor", [None, 1.0, 0.5])
def test_send_plan_keeps_every_token_that_fits(choice, cap_factor):
  choice = jnp.array(choice)
  N = len(choice)
  cap = ep_lib.capacity(N, EP, cap_factor)
  plan = ep_lib.send_plan(choice, E, EP, cap)
  c = np.asarray(choice)
  dest = np.where(c < E, c // (E // EP), EP)
  expected_kept = sum(min(int(np.sum(dest == d)), cap) for d in range(EP))
  kept = np.asarray(plan.slot) < EP * cap
  assert kept.sum() == expected_kept
  assert int(plan.dropped) == int(np.sum(c < E)) - expected_kept
  np.testing.assert_array_equal(np.asarray(plan.gather_rows)[np.asarray(plan.slot)[kept]], np.flatnonzero(kept))
  slots = np.asarray(plan.slot)[kept]
  np.testing.assert_array_equal(slots // cap, dest[kept])  # each token lands in its destination's section
  np.testing.assert_array_equal(np.asarray(plan.local_expert)[slots], c[kept] % (E // EP))
  if cap_factor is None:
    assert int(plan.dropped) == 0


def test_capacity():
  assert ep_lib.capacity(10, 4, None) == 10
  assert ep_lib.capacity(10, 4, 1.0) == 3
  assert ep_lib.capacity(10, 4, 100.0) == 10
  with pytest.raises(ValueError, match="capacity_factor must be positive"):
    ep_lib.capacity(10, 4, 0.0)
