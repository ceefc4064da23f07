"""The model on a device mesh (8 simulated CPU devices) equals the single-device model: logits and grads."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from zaya_jax import sharding

_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from zaya_jax import ZayaConfig, forward, init_params, sharding
    assert jax.device_count() == 8
    config = ZayaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=8, moe_intermediate_size=16, num_experts=8,
                        router_hidden_size=8, eos_token_id=1, layer_types=("hybrid", "hybrid_sliding"),
                        sliding_window=4, moe_block_size=8)
    params = init_params(config, jax.random.key(0))
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
    ids = jax.random.randint(jax.random.key(2), (8, 12), 0, config.vocab_size)
    loss = lambda p, ids: jnp.mean(jax.nn.log_softmax(forward(p, config, ids)) ** 2)
    ref_logits = forward(params, config, ids)
    ref_grads = jax.grad(loss)(params, ids)
    for axes in json.loads(sys.argv[1]):
      mesh = sharding.make_mesh(axes)
      p = sharding.shard_params(params, config, mesh)
      x = jax.device_put(ids, sharding.batch_sharding(mesh))
      with jax.set_mesh(mesh):  # with expert > 1 the MoE runs expert-parallel (shard_map + all_to_all)
        fwd = jax.jit(lambda p, x: forward(p, config, x))
        assert ("all_to_all" in fwd.lower(p, x).as_text()) == (axes.get("expert", 1) > 1)
        logits = fwd(p, x)
        grads = jax.jit(jax.grad(loss))(p, x)
      np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-5 * float(jnp.abs(ref_logits).max()))
      for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(float(jnp.abs(b).max()), 1e-6))
      sharded = [s for s in jax.tree.leaves(jax.tree.map(lambda a: a.sharding.spec, p)) if any(s)]
      print("ok", axes, "sharded leaves:", len(sharded))
""")


def _check_meshes(meshes):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(meshes)], env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr[-4000:]
  assert out.stdout.count("ok ") == len(meshes), out.stdout


def test_sharded_model_equals_unsharded_on_a_3d_mesh():
  """Data, FSDP and expert parallelism at once (the default run; the slow test below covers the other meshes)."""
  _check_meshes([{"fsdp": 2, "expert": 2, "data": 2}])


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores; `pytest -m slow` runs it
def test_sharded_model_equals_unsharded_on_several_meshes():
  _check_meshes([{"data": 8}, {"data": 2, "expert": 4}, {"expert": 8}, {"tensor": 2, "data": -1}])


def test_mesh_shape_fills_and_validates():
  assert sharding.mesh_shape({"data": -1, "expert": 4}, 8) == (2, 1, 4, 1)
  assert sharding.mesh_shape({}, 1) == (1, 1, 1, 1)
  with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="needs 6 devices, have 8"):
    sharding.mesh_shape({"data": 3, "expert": 2}, 8)
  with pytest.raises(ValueError, match="unknown mesh axes"):
    sharding.mesh_shape({"pipeline": 2}, 8)
  with pytest.raises(ValueError, match="cannot be split"):
    sharding.mesh_shape({"data": -1, "expert": 3}, 8)
