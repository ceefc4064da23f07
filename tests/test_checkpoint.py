"""HF-format checkpoints: save -> transformers loads the same function; load keeps the balancing biases; errors."""

import json
import os

import hf_oracle
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from conftest import TINY_CONFIGS
from safetensors.numpy import load_file, save_file

from zaya_jax import CheckpointError, forward, init_params, load_hf_checkpoint, save_hf_checkpoint
from zaya_jax.checkpoint import expected_shapes

CONFIG = TINY_CONFIGS["sliding"]


def _randomized_params(config, seed=0):
  """Our own init with every leaf perturbed, so no tensor sits at a default value."""
  params = init_params(config, jax.random.key(seed))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  scale = lambda x: 0.2 if x.ndim <= 2 and x.shape[-1] == config.hidden_size else 0.1
  new = [x + scale(x) * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, new)


def _file_tensors(path):
  tensors = {}
  for name in sorted(os.listdir(path)):
    if name.endswith(".safetensors"):
      tensors.update(load_file(os.path.join(path, name)))
  return tensors


def _hf_model_from_files(config, path):
  """An in-memory transformers model holding exactly the file's tensors (from_pretrained would reset β)."""
  model = transformers.ZayaForCausalLM(hf_oracle.hf_config(config)).eval()
  tensors = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in _file_tensors(path).items()}
  missing, unexpected = model.load_state_dict(tensors, strict=False)
  assert set(missing) == {"lm_head.weight"} and not unexpected
  model.tie_weights()
  return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  params = _randomized_params(CONFIG)
  path = tmp_path_factory.mktemp("ckpt")
  save_hf_checkpoint(path, CONFIG, params, max_shard_bytes=20_000)  # several shards + index
  return params, path


def test_save_writes_sharded_transformers_layout(saved):
  _, path = saved
  files = sorted(os.listdir(path))
  assert "config.json" in files and "model.safetensors.index.json" in files
  assert sum(f.endswith(".safetensors") for f in files) > 2
  tensors = _file_tensors(path)
  assert {k: tuple(v.shape) for k, v in tensors.items()} == expected_shapes(CONFIG)
  assert len(tensors) == 4 + 32 * CONFIG.num_hidden_layers - 1
  with open(os.path.join(path, "config.json")) as f:
    assert json.load(f)["model_type"] == "zaya"


def test_transformers_computes_the_same_logits_from_saved_files(saved):
  params, path = saved
  model = _hf_model_from_files(CONFIG, path)
  ids = np.random.RandomState(20).randint(0, CONFIG.vocab_size, (2, 9))
  ref = hf_oracle.hf_logits(model, ids)
  ours = np.asarray(forward(params, CONFIG, ids))
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_transformers_from_pretrained_loads_the_files(saved):
  """transformers reads every parameter from our files (its from_pretrained then resets the routers' β)."""
  params, path = saved
  model = transformers.ZayaForCausalLM.from_pretrained(path, dtype=torch.float32)
  file_tensors = _file_tensors(path)
  for name, tensor in model.state_dict().items():
    if name in file_tensors and not name.endswith("balancing_biases"):
      np.testing.assert_array_equal(tensor.numpy(), file_tensors[name], err_msg=name)


def test_load_round_trips_exactly_and_keeps_balancing_biases(saved):
  params, path = saved
  config, loaded = load_hf_checkpoint(path, dtype=jnp.float32)
  assert config == CONFIG
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  stored = _file_tensors(path)["model.layers.2.mlp.gate.balancing_biases"]
  np.testing.assert_array_equal(np.asarray(loaded["layers"]["mlp"]["gate"]["balancing_biases"][1]), stored)
  assert not np.allclose(stored, [0.0] * CONFIG.num_experts + [-1.0])  # not the init values


def test_bf16_storage_and_loading(tmp_path, saved):
  params, _ = saved
  save_hf_checkpoint(tmp_path, CONFIG, params, dtype=jnp.bfloat16)
  tensors = _file_tensors(tmp_path)
  assert tensors["model.embed_tokens.weight"].dtype == ml_dtypes.bfloat16
  assert tensors["model.layers.0.mlp.gate.balancing_biases"].dtype == np.float32
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["dtype"] == "bfloat16"
  config, loaded = load_hf_checkpoint(tmp_path, dtype=jnp.bfloat16)
  assert config.dtype == "bfloat16" and loaded["embed_tokens"].dtype == jnp.bfloat16
  assert loaded["layers"]["mlp"]["gate"]["balancing_biases"].dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(loaded["embed_tokens"]),
                                np.asarray(params["embed_tokens"].astype(jnp.bfloat16)))
  _, loaded32 = load_hf_checkpoint(tmp_path, dtype=jnp.float32)
  assert loaded32["embed_tokens"].dtype == jnp.float32


def _rewrite(path, edit):
  """Loads the single-file checkpoint at path, applies edit(dict), writes it back."""
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  edit(tensors)
  save_file(tensors, file, metadata={"format": "pt"})


@pytest.fixture
def single_file(tmp_path, saved):
  save_hf_checkpoint(tmp_path, CONFIG, saved[0])
  return tmp_path


def test_missing_tensor_is_named(single_file):
  _rewrite(single_file, lambda t: t.pop("model.layers.1.self_attn.qk_norm.temp"))
  with pytest.raises(CheckpointError, match=r"missing tensors \(1\): \['model.layers.1.self_attn.qk_norm.temp'\]"):
    load_hf_checkpoint(single_file)


def test_renamed_tensor_is_named(single_file):
  def rename(t):
    t["model.layers.0.mlp.gate.router_mlp.rmsnorm_eda.weight"] = t.pop("model.layers.0.mlp.gate.router_mlp.norm.weight")
  _rewrite(single_file, rename)
  with pytest.raises(CheckpointError, match=r"missing tensors.*router_mlp.norm.weight.*"
                                            r"unexpected tensors.*router_mlp.rmsnorm_eda.weight"):
    load_hf_checkpoint(single_file)


def test_misshaped_tensor_names_both_shapes(single_file):
  def shrink(t):
    t["model.layers.3.mlp.experts.down_proj"] = t["model.layers.3.mlp.experts.down_proj"][:, :, :-1].copy()
  _rewrite(single_file, shrink)
  with pytest.raises(CheckpointError, match=r"tensor model.layers.3.mlp.experts.down_proj has shape \(3, 48, 23\), "
                                            r"expected \(3, 48, 24\)"):
    load_hf_checkpoint(single_file)


def test_missing_files_are_reported(tmp_path, saved):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    load_hf_checkpoint(tmp_path)
  save_hf_checkpoint(tmp_path, CONFIG, saved[0], max_shard_bytes=20_000)
  shard = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))[0]
  os.remove(tmp_path / shard)
  with pytest.raises(CheckpointError, match="shard files that do not exist"):
    load_hf_checkpoint(tmp_path)
