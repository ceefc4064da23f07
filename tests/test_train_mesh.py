"""Training on a device mesh (8 simulated CPU devices; data=2 x expert=4, so the MoE runs expert-parallel)
logs the same losses as training on one device."""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import os, sys, tempfile
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, ml_collections, numpy as np
    import configs.tiny
    from zaya_jax.train import reporting, trainer
    assert jax.device_count() == 8
    config = configs.tiny.get_config()
    del config["data"]  # synthetic documents
    config.model = ml_collections.ConfigDict(dict(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, moe_intermediate_size=32, num_experts=4, router_hidden_size=8, eos_token_id=1))
    config.train.update(steps=3, batch_size=8, seq_len=16, log_every=1, eval_every=0, checkpoint_every=100)
    losses = {}
    for name, mesh in (("single", None), ("mesh", dict(data=2, expert=4))):
      if mesh is None:
        del config["mesh"]  # no mesh group: one device
      else:
        config.mesh = ml_collections.ConfigDict(mesh)
      workdir = tempfile.mkdtemp()
      state = trainer.train(config, workdir)
      losses[name] = [r["loss"] for r in reporting.read_metrics(workdir) if "loss" in r]
      experts = state.params["layers"]["mlp"]["experts"]["gate_up_proj"]
      assert len(experts.sharding.device_set) == (1 if mesh is None else 8), experts.sharding
    np.testing.assert_allclose(losses["mesh"], losses["single"], rtol=1e-5)
    assert len(losses["mesh"]) == 3
    print("ok")
""")


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores; `pytest -m slow` runs it
def test_training_on_a_mesh_matches_one_device():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                       cwd=REPO)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-4000:]
  assert out.stdout.strip().endswith("ok"), out.stdout
