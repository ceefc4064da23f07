"""The MoE++ ablation variants: configs build, models run, decode with the cache equals the full forward pass,
gradients reach every parameter, and none can be exported to the transformers format."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_CONFIGS

from zaya_jax import ConfigError, count_params, decode_step, forward, init_decode_state, init_params, prefill
from zaya_jax.checkpoint import save_hf_checkpoint

VARIANTS = {
    "linear_router": dict(router_type="linear"),
    "gqa_attention": dict(attention_type="gqa"),
    "no_residual_scaling": dict(residual_scaling=False),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_ablation_config_files(name):
  from zaya_jax.config import ZayaConfig

  cfg = importlib.import_module(f"configs.ablations.{name}").get_config()
  model = ZayaConfig.from_dict(cfg.model.to_dict())
  assert not model.is_zaya
  assert all(getattr(model, k) == v for k, v in VARIANTS[name].items())


# One variant in the default run (its own attention code path); the other two in `-m slow`.
@pytest.mark.parametrize("name", [n if n == "gqa_attention" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in VARIANTS])
def test_ablation_models_run_decode_and_train(name, tmp_path):
  config = TINY_CONFIGS["sliding"].replace(**VARIANTS[name])
  params = init_params(config, jax.random.key(0))
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
  ids = np.random.RandomState(0).randint(0, config.vocab_size, (2, 7))
  full = np.asarray(forward(params, config, ids))
  state = init_decode_state(config, batch_size=2, max_len=7)
  logits, state = prefill(params, config, ids[:, :4], state, all_logits=True)
  np.testing.assert_allclose(logits, full[:, :4], rtol=0, atol=1e-5 * np.abs(full).max())
  for t in range(4, 7):
    logits, state = decode_step(params, config, ids[:, t], state)
    np.testing.assert_allclose(logits, full[:, t], rtol=0, atol=1e-5 * np.abs(full).max())
  grads = jax.grad(lambda p: jnp.sum(forward(p, config, ids) ** 2))(params)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  assert all(np.any(np.asarray(g) != 0) for path, g in flat if path[-1].key != "balancing_biases")
  base = count_params(TINY_CONFIGS["sliding"])["total"]
  assert count_params(config)["total"] != base
  with pytest.raises(ConfigError, match="no transformers format"):
    save_hf_checkpoint(tmp_path, config, params)
