"""benchmarks/memory_plan.py: shard arithmetic on a tiny config, and the ZAYA1-8B table (shapes only)."""

import importlib.util
import os

import jax
import pytest
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

from conftest import TINY_CONFIGS
from zaya_jax.sharding import MESH_AXES

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "memory_plan.py")
_spec = importlib.util.spec_from_file_location("memory_plan", _PATH)
mp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mp)

_is_spec = lambda x: isinstance(x, PartitionSpec)


def _pairs(config):
  params = mp.abstract_params(config)
  specs = mp.mesh_param_specs(config)
  return params, list(zip(jax.tree.leaves(params), jax.tree.leaves(specs, is_leaf=_is_spec)))


@pytest.mark.parametrize("axes,devices", [({"data": 2, "fsdp": 2, "expert": 2, "tensor": 2}, 16),
                                          ({"fsdp": 4, "tensor": 3}, 12), ({"expert": 8}, 8)])
def test_shards_add_up_to_the_model(axes, devices):
  config = TINY_CONFIGS["base"]
  params, pairs = _pairs(config)
  sizes = mp.axis_sizes_of(axes, devices)
  total = mp.total_bytes(params)
  per_device = mp.per_device_bytes(params, mp.mesh_param_specs(config), sizes)
  # Each piece once: per-device bytes x number of distinct pieces, summed over leaves = the model.
  assert sum(mp.nbytes(mp.shard_shape(l.shape, s, sizes), l.dtype) * mp.num_shards(l.shape, s, sizes)
             for l, s in pairs) == total
  # Summed over devices: every piece times its replication factor (devices / pieces).
  assert per_device * devices == sum(
      mp.nbytes(l.shape, l.dtype) * (devices // mp.num_shards(l.shape, s, sizes)) for l, s in pairs)
  # The same shard shapes as JAX's own NamedSharding over an abstract mesh (no devices needed).
  mesh = AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES)
  for l, s in pairs:
    assert mp.shard_shape(l.shape, s, sizes) == NamedSharding(mesh, mp.divisible_spec(s, l.shape, sizes)).shard_shape(l.shape)


def test_everything_divides_and_nondivisible_dims_stay_whole():
  config = TINY_CONFIGS["base"]
  params, pairs = _pairs(config)
  sizes = mp.axis_sizes_of({"fsdp": 2, "expert": 2, "tensor": 2, "data": 2}, 16)
  # base: D=64, H*d=64, K*d=32, V=128, E=4, I=32: every mapped dimension divides, so nothing is dropped.
  for l, s in pairs:
    assert mp.divisible_spec(s, l.shape, sizes) == PartitionSpec(*(tuple(s) + (None,) * (l.ndim - len(s))))
  emb = params["embed_tokens"]
  spec = mp.mesh_param_specs(config)["embed_tokens"]
  assert mp.shard_shape(emb.shape, spec, sizes) == (64, 32)  # vocab over tensor, embed over fsdp
  odd = mp.axis_sizes_of({"tensor": 3, "fsdp": 5}, 15)  # divides neither 128 nor 64: stored whole
  assert mp.shard_shape(emb.shape, spec, odd) == (128, 64) and mp.num_shards(emb.shape, spec, odd) == 1


def test_optimizer_state_follows_params_and_activation_model():
  from configs import zaya1_8b
  config = TINY_CONFIGS["base"]
  optim = zaya1_8b.get_config().optim
  meshes = [("one", {}, 1), ("ep4", {"expert": 4}, 4), ("fsdp2 ep2", {"fsdp": 2, "expert": 2}, 4)]
  rows = mp.plan(config, optim, meshes, global_batch=8, seq=16, micro_batch=2)
  one = rows[0]
  assert one["params"] == mp.total_bytes(mp.abstract_params(config))
  assert one["optimizer"] > one["params"]  # Muon momentum everywhere + AdamW's second moment on the rest
  for r in rows[1:]:
    assert r["params"] < one["params"] and r["optimizer"] < one["optimizer"]
    assert r["seqs_per_device"] == 2
  a = mp.activation_model(config, 16)
  assert 0 < a["layer"] and 0 < a["outside"] and a["remat"] < a["none"]
  assert rows[0]["act_none"] == 2 * a["none"] and rows[0]["act_remat"] == 2 * a["remat"]
  assert a["none"] == a["outside"] + config.num_hidden_layers * a["layer"]


def test_8b_table(capsys):
  mp.main(["--no_activations"])
  out = capsys.readouterr().out
  assert "8,840,488,784 parameters" in out  # main() asserts the pieces add up to count_params x 4 bytes
  assert "| FSDP 8 x EP 8 | 64 | 1×8×8×1 |" in out
  fsdp64 = next(l for l in out.splitlines() if l.startswith("| FSDP 64 |"))
  params_gib = float(fsdp64.split("|")[5])
  # The rules replicate the router MLP and CCA conv kernels (~0.07 GiB fp32); everything else is split 64 ways.
  assert 8_840_488_784 * 4 / 64 / 2 ** 30 < params_gib < 8_840_488_784 * 4 / 64 / 2 ** 30 + 0.1
