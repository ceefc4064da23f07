"""The optimiser (zaya_jax/train/optimizer.py): parameter groups, frozen biases, per-matrix Muon, schedules."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import configs.tiny
from zaya_jax.api import init_params
from zaya_jax.config import ZayaConfig
from zaya_jax.data.pipeline import BATCH_KEYS
from zaya_jax.train import balancing as bal
from zaya_jax.train import optimizer as opt
from zaya_jax.train import steps

MODEL = ZayaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                   head_dim=16, moe_intermediate_size=32, num_experts=4, router_hidden_size=8, eos_token_id=1)


def _optim(**changes):
  cfg = configs.tiny.get_config().optim
  cfg.update(changes)
  return cfg


@pytest.fixture(scope="module")
def params():
  """The model's parameter tree (shapes only: labels depend on names and ranks)."""
  return jax.eval_shape(functools.partial(init_params, MODEL), jax.random.PRNGKey(0))


def _small_tree():
  """A few leaves of each group, at the model's paths (a whole-model update would take long to compile)."""
  block = lambda *lead: {"mlp": {
      "gate": {"balancing_biases": jnp.zeros((*lead, 5)), "fc1_kernel": jnp.ones((*lead, 8, 8)),
               "fc1_bias": jnp.ones((*lead, 8))},
      "experts": {"down_proj": jnp.ones((*lead, 4, 8, 6))}}}
  return {"embed_tokens": jnp.ones((16, 6)), "norm": {"weight": jnp.ones(6)}, "layer_0": block(), "layers": block(2)}


def _labels_by_path(params):
  flat = jax.tree_util.tree_flatten_with_path(opt.param_labels(params))[0]
  return {"/".join(str(k.key) for k in path): label for path, label in flat}


def test_param_groups(params):
  labels = _labels_by_path(params)
  for path in ("layer_0/self_attn/q_proj", "layers/self_attn/o_proj", "layers/self_attn/v_proj_delayed",
               "layers/mlp/experts/gate_up_proj", "layer_0/mlp/experts/down_proj", "layers/mlp/gate/fc1_kernel",
               "layers/mlp/gate/down_proj_kernel"):
    assert labels[path] == "muon", path
  for path in ("embed_tokens", "norm/weight", "input_hidden_states_scale", "layers/self_attn/temp",
               "layers/self_attn/conv_qk_grouped_kernel", "layers/self_attn/conv_qk_depthwise_kernel",
               "layers/mlp/gate/out_proj_kernel", "layers/mlp/gate/fc1_bias", "layers/mlp/gate/router_states_scale",
               "layers/post_mlp_residual_scale/residual_scale", "layers/input_layernorm/weight"):
    assert labels[path] == "adam", path
  assert {p for p, l in labels.items() if l == "frozen"} == {"layer_0/mlp/gate/balancing_biases",
                                                            "layers/mlp/gate/balancing_biases"}


@pytest.mark.parametrize("name", ["muon", "adamw"])
def test_balancing_biases_are_frozen(name):
  params = _small_tree()
  tx = opt.make_optimizer(_optim(name=name, warmup_steps=0), total_steps=10)
  rng = np.random.default_rng(0)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)  # biases' too
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  np.testing.assert_array_equal(bal.get_biases(updates), 0.0)
  moved = [float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(updates)]
  assert sum(moved) == len(moved) - 2  # every other leaf is updated


def test_muon_orthogonalises_each_layer_and_expert_matrix():
  """A stacked [layers, experts, in, out] leaf gets the same update as each of its matrices alone, and each
  update is (approximately) orthogonal, rescaled to RMS lr * muon_rms."""
  cfg = _optim(warmup_steps=0, weight_decay=0.0, lr=1.0)
  tx = opt.make_optimizer(cfg, total_steps=10)
  g = jax.random.normal(jax.random.key(1), (2, 2, 12, 20))
  tree = lambda x: {"layers": {"mlp": {"experts": {"gate_up_proj": x}}}}
  leaf = lambda t: t["layers"]["mlp"]["experts"]["gate_up_proj"]
  update = jax.jit(lambda x: leaf(tx.update(tree(x), tx.init(tree(x)), tree(x))[0]))
  stacked = update(g)
  for i in range(2):
    for e in range(2):
      alone = update(g[i, e])
      np.testing.assert_allclose(stacked[i, e], alone, atol=1e-5)
      sv = np.linalg.svd(np.asarray(stacked[i, e]), compute_uv=False)
      assert sv.max() / sv.min() < 2.0  # Newton-Schulz: singular values pulled into ~[0.7, 1.2] of each other
      rms = float(jnp.sqrt(jnp.mean(stacked[i, e] ** 2)))
      assert 0.6 * cfg.muon_rms < rms < 1.3 * cfg.muon_rms


def test_wsd_schedule():
  s = opt.make_schedule(_optim(schedule="wsd", lr=1.0, warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.1),
                        total_steps=100)
  np.testing.assert_allclose([s(0), s(5), s(10), s(50), s(80), s(90), s(100)],
                             [0.0, 0.5, 1.0, 1.0, 1.0, 0.55, 0.1], atol=1e-6)


def test_cosine_and_constant_schedules():
  cos = opt.make_schedule(_optim(schedule="cosine", lr=2.0, warmup_steps=10, min_lr_ratio=0.1), total_steps=110)
  np.testing.assert_allclose([cos(0), cos(10), cos(60), cos(110)], [0.0, 2.0, 1.1, 0.2], atol=1e-5)
  const = opt.make_schedule(_optim(schedule="constant", lr=2.0, warmup_steps=4), total_steps=100)
  np.testing.assert_allclose([const(2), const(4), const(99)], [1.0, 2.0, 2.0])


def test_bad_names_raise():
  with pytest.raises(ValueError, match="optim.schedule"):
    opt.make_schedule(_optim(schedule="linear"), 10)
  with pytest.raises(ValueError, match="optim.name"):
    opt.make_optimizer(_optim(name="sgd"), 10)


def test_bf16_compute_keeps_fp32_master_weights():
  """dtype=bfloat16 is only the activation dtype: params, gradients and optimiser state stay fp32."""
  model = MODEL.replace(dtype="bfloat16", param_dtype="float32")
  tx = opt.make_optimizer(_optim(), total_steps=10)
  balancing = ml_collections.ConfigDict(dict(rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                                             skip_mode="experts"))
  state = jax.eval_shape(lambda: steps.init_train_state(model, tx, 0))
  batch = {k: jax.ShapeDtypeStruct((2, 8), jnp.int32) for k in BATCH_KEYS}
  new_state, metrics = jax.eval_shape(steps.make_train_step(model, tx, balancing), state, batch)
  floats = [x.dtype for x in jax.tree.leaves((new_state.params, new_state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(d == jnp.float32 for d in floats)
  assert metrics["loss"].dtype == jnp.float32
