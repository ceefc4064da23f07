"""transformers-format (HF) checkpoints: config.json + safetensors shards <-> (ZayaConfig, params).

One table (`_BLOCK_TENSORS`) maps every per-block tensor name to its place in the parameter tree and the layout
change between PyTorch ([out, in] linears, [C, in/groups, K] convs, [E, out, in] experts) and ours ([in, out]).
Loading streams tensor by tensor: stacked layer arrays are allocated once and filled in place (buffer
donation), so peak host memory is one copy of the weights plus one tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from zaya_jax import api
from zaya_jax.config import ZayaConfig


class CheckpointError(ValueError):
  """A checkpoint whose tensors do not match the configuration."""


def _ident(x):
  return x


def _transpose(x):
  return x.T


@dataclasses.dataclass(frozen=True)
class _Layout:
  to_jax: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


IDENT = _Layout(_ident, _ident)
LINEAR = _Layout(_transpose, _transpose)  # [out, in] <-> [in, out]
DEPTHWISE = _Layout(lambda x: x[:, 0, :].T, lambda x: x.T[:, None, :])  # [C,1,K] <-> [K,C]
GROUPED = _Layout(lambda x: x.transpose(2, 1, 0), lambda x: x.transpose(2, 1, 0))  # [C,j,K] <-> [K,j,C]
EXPERTS = _Layout(lambda x: x.transpose(0, 2, 1), lambda x: x.transpose(0, 2, 1))  # [E,out,in] <-> [E,in,out]

# HF name (after "model.layers.{i}.") -> (path inside a block's params, layout).
_BLOCK_TENSORS = [
    ("input_layernorm.weight", ("input_layernorm", "weight"), IDENT),
    ("self_attn.qkv_proj.q_proj.weight", ("self_attn", "q_proj"), LINEAR),
    ("self_attn.qkv_proj.k_proj.weight", ("self_attn", "k_proj"), LINEAR),
    ("self_attn.qkv_proj.v_proj_current.weight", ("self_attn", "v_proj_current"), LINEAR),
    ("self_attn.qkv_proj.v_proj_delayed.weight", ("self_attn", "v_proj_delayed"), LINEAR),
    ("self_attn.qkv_proj.conv_qk_depthwise.weight", ("self_attn", "conv_qk_depthwise_kernel"), DEPTHWISE),
    ("self_attn.qkv_proj.conv_qk_depthwise.bias", ("self_attn", "conv_qk_depthwise_bias"), IDENT),
    ("self_attn.qkv_proj.conv_qk_grouped.weight", ("self_attn", "conv_qk_grouped_kernel"), GROUPED),
    ("self_attn.qkv_proj.conv_qk_grouped.bias", ("self_attn", "conv_qk_grouped_bias"), IDENT),
    ("self_attn.qk_norm.temp", ("self_attn", "temp"), IDENT),
    ("self_attn.o_proj.weight", ("self_attn", "o_proj"), LINEAR),
    *[(f"{group}.{field}", (group, field), IDENT)
      for group in ("post_attention_residual_scale", "post_mlp_residual_scale")
      for field in ("hidden_states_scale", "hidden_states_bias", "residual_scale", "residual_bias")],
    ("post_attention_layernorm.weight", ("post_attention_layernorm", "weight"), IDENT),
    ("mlp.gate.down_proj.weight", ("mlp", "gate", "down_proj_kernel"), LINEAR),
    ("mlp.gate.down_proj.bias", ("mlp", "gate", "down_proj_bias"), IDENT),
    ("mlp.gate.router_states_scale", ("mlp", "gate", "router_states_scale"), IDENT),
    ("mlp.gate.router_mlp.norm.weight", ("mlp", "gate", "norm", "weight"), IDENT),
    ("mlp.gate.router_mlp.fc1.weight", ("mlp", "gate", "fc1_kernel"), LINEAR),
    ("mlp.gate.router_mlp.fc1.bias", ("mlp", "gate", "fc1_bias"), IDENT),
    ("mlp.gate.router_mlp.fc2.weight", ("mlp", "gate", "fc2_kernel"), LINEAR),
    ("mlp.gate.router_mlp.fc2.bias", ("mlp", "gate", "fc2_bias"), IDENT),
    ("mlp.gate.router_mlp.out_proj.weight", ("mlp", "gate", "out_proj_kernel"), LINEAR),
    ("mlp.gate.balancing_biases", ("mlp", "gate", "balancing_biases"), IDENT),
    ("mlp.experts.gate_up_proj", ("mlp", "experts", "gate_up_proj"), EXPERTS),
    ("mlp.experts.down_proj", ("mlp", "experts", "down_proj"), EXPERTS),
]

_GLOBAL_TENSORS = [
    ("model.embed_tokens.weight", ("embed_tokens",), IDENT),
    ("model.input_hidden_states_scale", ("input_hidden_states_scale",), IDENT),
    ("model.input_hidden_states_bias", ("input_hidden_states_bias",), IDENT),
    ("model.norm.weight", ("norm", "weight"), IDENT),
]

# Tensors a transformers checkpoint may carry that the tied model does not need.
_TOLERATED_EXTRAS = frozenset({"lm_head.weight"})


@dataclasses.dataclass(frozen=True)
class TensorSlot:
  """Where one HF tensor lives in the params tree: `path`, and `layer` (index into the stacked axis) or None."""
  name: str
  path: tuple[str, ...]
  layer: int | None
  layout: _Layout


def tensor_slots(config: ZayaConfig) -> list[TensorSlot]:
  """Every tensor of the HF checkpoint for `config`, in file order."""
  slots = [TensorSlot(name, path, None, layout) for name, path, layout in _GLOBAL_TENSORS]
  for i in range(config.num_hidden_layers):
    for suffix, path, layout in _BLOCK_TENSORS:
      if i == 0 and suffix == "mlp.gate.router_states_scale":
        continue  # block 0 has no EDA input
      prefix, layer = (("layer_0",), None) if i == 0 else (("layers",), i - 1)
      slots.append(TensorSlot(f"model.layers.{i}.{suffix}", prefix + path, layer, layout))
  return slots


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _hf_shape(slot: TensorSlot, jax_shape) -> tuple[int, ...]:
  shape = jax_shape[1:] if slot.layer is not None else jax_shape
  return slot.layout.to_hf(np.broadcast_to(np.zeros((), np.float32), shape)).shape


def expected_shapes(config: ZayaConfig) -> dict[str, tuple[int, ...]]:
  """HF tensor name -> shape, for `config`."""
  abstract = jax.eval_shape(lambda: api.init_params(config, jax.random.key(0)))
  return {s.name: _hf_shape(s, _get(abstract, s.path).shape) for s in tensor_slots(config)}


# Reading ----------------------------------------------------------------------------------------------------------

def _shard_files(path: str) -> list[str]:
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    files = sorted(set(weight_map.values()))
  else:
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if not files:
    raise CheckpointError(f"no .safetensors files in {path}")
  missing = [f for f in files if not os.path.exists(os.path.join(path, f))]
  if missing:
    raise CheckpointError(f"checkpoint index names shard files that do not exist: {missing}")
  return [os.path.join(path, f) for f in files]


_set_layer_inplace = jax.jit(lambda stacked, value, layer: stacked.at[layer].set(value), donate_argnums=0)


def params_from_tensors(config: ZayaConfig, tensors: Iterator[tuple[str, np.ndarray]], dtype=jnp.float32):
  """Builds params from (HF name, array) pairs, checking names and shapes; biases stay fp32.

  Consumes the iterator one tensor at a time; raises CheckpointError naming missing, unexpected or
  mis-shaped tensors (with the expected and the found shape).
  """
  abstract = jax.eval_shape(lambda: api.init_params(config, jax.random.key(0)))
  slots = {s.name: s for s in tensor_slots(config)}
  leaves: dict[tuple[str, ...], jax.Array] = {}
  seen = set()
  unexpected = []
  for name, array in tensors:
    slot = slots.get(name)
    if slot is None:
      if name not in _TOLERATED_EXTRAS:
        unexpected.append(name)
      continue
    leaf_shape = _get(abstract, slot.path).shape
    want = _hf_shape(slot, leaf_shape)
    if tuple(array.shape) != want:
      raise CheckpointError(f"tensor {name} has shape {tuple(array.shape)}, expected {want} for this config")
    leaf_dtype = jnp.float32 if slot.path[-1] == "balancing_biases" else jnp.dtype(dtype)
    value = jnp.asarray(np.asarray(slot.layout.to_jax(array)).astype(leaf_dtype, copy=False))
    if slot.layer is None:
      leaves[slot.path] = value
    else:
      if slot.path not in leaves:
        leaves[slot.path] = jnp.zeros(leaf_shape, leaf_dtype)
      leaves[slot.path] = _set_layer_inplace(leaves[slot.path], value, slot.layer)
    seen.add(name)
  missing = [n for n in slots if n not in seen]
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"missing tensors ({len(missing)}): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
      parts.append(f"unexpected tensors ({len(unexpected)}): {unexpected[:8]}"
                   f"{' ...' if len(unexpected) > 8 else ''}")
    raise CheckpointError("checkpoint does not match the config: " + "; ".join(parts))
  return jax.tree_util.tree_map_with_path(lambda p, _: leaves[tuple(k.key for k in p)], abstract)


def _iter_safetensors(files) -> Iterator[tuple[str, np.ndarray]]:
  for file in files:
    with safe_open(file, framework="numpy") as f:
      for name in f.keys():
        yield name, f.get_tensor(name)


def load_hf_checkpoint(path, dtype=jnp.float32, **config_overrides):
  """Loads a transformers-format directory -> (ZayaConfig, params).

  `dtype` is the parameter and compute dtype (bf16 or fp32; the stored dtype is converted). The stored
  balancing biases are kept (fp32). Other config fields can be overridden, e.g. param_dtype.
  """
  path = os.fspath(path)
  overrides = {"dtype": jnp.dtype(dtype).name, "param_dtype": jnp.dtype(dtype).name}
  overrides.update(config_overrides)
  config = ZayaConfig.from_hf(path, **overrides)
  params = params_from_tensors(config, _iter_safetensors(_shard_files(path)), dtype=config.param_dtype)
  return config, params


# Writing ----------------------------------------------------------------------------------------------------------

def hf_tensors(config: ZayaConfig, params, dtype=None) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, numpy array in PyTorch layout) for every tensor, one at a time; biases stay fp32."""
  for slot in tensor_slots(config):
    leaf = _get(params, slot.path)
    value = leaf[slot.layer] if slot.layer is not None else leaf
    array = np.asarray(jax.device_get(value))
    if slot.path[-1] == "balancing_biases":
      array = array.astype(np.float32)
    elif dtype is not None:
      array = array.astype(_np_dtype(dtype))
    yield slot.name, np.ascontiguousarray(slot.layout.to_hf(array))


def _np_dtype(dtype):
  name = jnp.dtype(dtype).name
  return ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)


def save_hf_checkpoint(path, config: ZayaConfig, params, dtype=None, max_shard_bytes: int = 5 * 2**30):
  """Writes config.json + safetensors shards (+ index when sharded) that transformers' ZayaForCausalLM loads.

  dtype: storage dtype of the weights (default: as in params). Holds at most one shard in host memory.
  """
  hf_config = config.to_hf()  # refuses the ablation variants before anything is written
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  for old in os.listdir(path):  # a previous save's shards would otherwise be read back with these
    if old.endswith(".safetensors") or old == "model.safetensors.index.json":
      os.remove(os.path.join(path, old))
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  weight_map, total = {}, 0
  names = []

  def flush():
    idx = len(names)
    name = f"model-{idx + 1:05d}.safetensors"
    save_file(shards[-1], os.path.join(path, name), metadata={"format": "pt"})
    names.append(name)
    for t in shards[-1]:
      weight_map[t] = name
    shards[-1] = {}

  stored_dtype = None
  for name, array in hf_tensors(config, params, dtype):
    if size and size + array.nbytes > max_shard_bytes:
      flush()
      size = 0
    shards[-1][name] = array
    size += array.nbytes
    total += array.nbytes
    if name == "model.embed_tokens.weight":
      stored_dtype = "bfloat16" if array.dtype == ml_dtypes.bfloat16 else array.dtype.name
  flush()
  if len(names) == 1:
    os.replace(os.path.join(path, names[0]), os.path.join(path, "model.safetensors"))
  else:
    final = {}
    for i, old in enumerate(names):
      new = f"model-{i + 1:05d}-of-{len(names):05d}.safetensors"
      os.replace(os.path.join(path, old), os.path.join(path, new))
      final[old] = new
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {"total_size": total},
                 "weight_map": {t: final[n] for t, n in sorted(weight_map.items())}}, f, indent=2)
  hf_config["dtype"] = stored_dtype
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
