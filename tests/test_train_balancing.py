"""The router balancing rule (zaya_jax/train/balancing.py): counts, load error, the AdamW step, metrics."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from zaya_jax.train import balancing as bal


def _cfg(**changes):
  cfg = dict(rate=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, skip_mode="experts")
  cfg.update(changes)
  return ml_collections.ConfigDict(cfg)


def test_expert_counts_skip_masked_tokens():
  idx = jnp.array([[[0, 1, 4], [4, 4, 2]]])  # L=1, B=2, S=3; class 4 = skip with E=4
  mask = jnp.array([[1, 1, 1], [1, 0, 1]])
  np.testing.assert_array_equal(bal.expert_counts(idx, mask, 4), [[1, 1, 1, 0, 2]])


def test_load_error_modes():
  counts = jnp.array([[3.0, 1.0, 0.0, 0.0, 4.0]])
  # experts: f over the 4 real experts among the 4 non-skipped tokens; the skip column is not balanced.
  np.testing.assert_allclose(bal.load_error(counts, "experts"), [[0.5, 0.0, -0.25, -0.25, 0.0]])
  # all: f over all 5 classes among 8 tokens, target 1/5.
  np.testing.assert_allclose(bal.load_error(counts, "all"), [[3 / 8 - 0.2, 1 / 8 - 0.2, -0.2, -0.2, 0.5 - 0.2]])
  with pytest.raises(ValueError, match="skip_mode"):
    bal.load_error(counts, "sign")


def test_update_matches_the_spec_equations():
  counts = jnp.array([[6.0, 2.0, 0.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 0.0]])
  biases = jnp.array([[0.1, 0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0, -1.0]])
  cfg = _cfg(weight_decay=0.5)
  state = bal.init_balancing(2, 4)
  new, state = bal.update_biases(biases, state, counts, cfg)
  g = np.asarray(bal.load_error(counts, "experts"))
  # k = 1: m_hat = g and v_hat = g^2, so the step is rate * (g / (|g| + eps) + wd * beta).
  expected = np.asarray(biases) - cfg.rate * (g / (np.abs(g) + cfg.eps) + cfg.weight_decay * np.asarray(biases))
  expected[:, -1] = -1.0  # experts mode: the skip bias is neither updated nor decayed
  np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-8)
  assert int(state.count) == 1
  np.testing.assert_allclose(state.m, 0.1 * g, rtol=1e-6)


def _route(probs_NC, biases_LC):
  return jnp.argmax(probs_NC[None] + biases_LC[:, None], axis=-1)  # [L, N]


@pytest.mark.parametrize("skip_mode", ["experts", "all"])
def test_skewed_router_becomes_balanced(skip_mode):
  """A fixed router that prefers expert 0 (and the skip route a little): the balancing biases alone must flatten
  the load, and in "experts" mode leave beta_skip where it started."""
  E, N = 4, 4096
  logits = jax.random.normal(jax.random.key(0), (N, E + 1)) * 0.5 + jnp.array([1.5, 0.5, 0.0, -0.5, 0.3])
  probs = jax.nn.softmax(logits, -1)
  biases0 = jnp.zeros((1, E + 1)).at[:, -1].set(-0.2)
  cfg = _cfg(skip_mode=skip_mode)
  mask = jnp.ones((1, N))

  def step(carry, _):
    biases, state = carry
    counts = bal.expert_counts(_route(probs, biases)[:, None], mask, E)
    biases, state = bal.update_biases(biases, state, counts, cfg)
    return (biases, state), bal.router_metrics(counts)

  (biases, _), metrics = jax.lax.scan(step, (biases0, bal.init_balancing(1, E)), None, length=300)
  ratio, entropy = metrics["load_max_min"][:, 0], metrics["load_entropy"][:, 0]
  assert ratio[0] > 10 and entropy[0] < 0.6  # badly skewed at the start
  assert ratio[-20:].max() < 1.3 and entropy[-20:].min() > 0.99  # balanced at the end
  if skip_mode == "experts":
    assert biases[0, -1] == biases0[0, -1]
  else:
    np.testing.assert_allclose(metrics["skip_rate"][-20:, 0], 1 / (E + 1), atol=0.03)


def test_router_metrics_hand_cases():
  m = bal.router_metrics(jnp.array([[2.0, 2.0, 2.0, 2.0, 0.0], [4.0, 0.0, 0.0, 0.0, 4.0]]))
  np.testing.assert_allclose(m["load_max_min"], [1.0, 4.0])
  np.testing.assert_allclose(m["load_entropy"], [1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(m["skip_rate"], [0.0, 0.5])


@pytest.mark.parametrize("layers", [1, 3])
def test_get_set_biases_round_trip(layers):
  def block(*lead):
    return {"mlp": {"gate": {"balancing_biases": jnp.zeros((*lead, 5)), "fc1_bias": jnp.ones((*lead, 2))}}}

  params = {"layer_0": block(), "embed_tokens": jnp.ones((3, 2))}
  if layers > 1:
    params["layers"] = block(layers - 1)
  beta = jnp.arange(layers * 5, dtype=jnp.float32).reshape(layers, 5)
  new = bal.set_biases(params, beta)
  np.testing.assert_array_equal(bal.get_biases(new), beta)
  assert jax.tree.structure(new) == jax.tree.structure(params)
  np.testing.assert_array_equal(bal.get_biases(params), jnp.zeros((layers, 5)))  # the input is not modified
