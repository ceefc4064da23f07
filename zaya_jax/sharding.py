"""Device mesh and logical-axis sharding rules (one table) for params, optimizer state and batches.

Mesh axes: data (pure data parallel), fsdp (data parallel with parameters sharded over it), expert (experts
split across devices; also carries batch), tensor (within-layer model parallel). Parameters carry logical axis
names (zaya_jax/model.py); `LOGICAL_AXIS_RULES` maps them to mesh axes. The compiler (GSPMD) inserts the
collectives, except in the MoE: under `jax.set_mesh(mesh)` with expert > 1 the expert FFN runs as an explicit
expert-parallel shard_map (zaya_jax/expert_parallel.py). Results equal the unsharded model
(tests/test_sharding.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from zaya_jax import api
from zaya_jax.config import ZayaConfig
from zaya_jax.expert_parallel import BATCH_AXES

MESH_AXES = ("data", "fsdp", "expert", "tensor")

# logical axis -> mesh axis (or None = replicated). One table for the whole model.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", BATCH_AXES),
    ("layers", None),  # the scanned layer axis stays whole on every device
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("expert", "expert"),
    ("head_dim", None),
    ("conv_time", None),
    ("conv_channels", None),
    ("norm", None),
    ("router", None),
    ("router_out", None),
    ("router_classes", None),
)


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Sizes of (data, fsdp, expert, tensor); one entry may be -1 (= whatever is left)."""
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; known: {MESH_AXES}")
  sizes = [int(axis_sizes.get(name, 1)) for name in MESH_AXES]
  fills = [i for i, s in enumerate(sizes) if s == -1]
  if len(fills) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if fills:
    if num_devices % known:
      raise ValueError(f"{num_devices} devices cannot be split into {dict(zip(MESH_AXES, sizes))}")
    sizes[fills[0]] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {num_devices}")
  return tuple(sizes)


def make_mesh(axis_sizes: Mapping[str, int], devices=None) -> jax.sharding.Mesh:
  """A mesh over `devices` (default: all) with axes (data, fsdp, expert, tensor)."""
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(axis_sizes, len(devices))
  return jax.sharding.Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def param_shardings(config: ZayaConfig, mesh, rules=LOGICAL_AXIS_RULES):
  """NamedSharding for every parameter, from its logical axes and the rules."""
  return nn.logical_to_mesh_sharding(api.logical_axes(config), mesh, rules)


def batch_sharding(mesh, rules=LOGICAL_AXIS_RULES, ndim: int = 2) -> NamedSharding:
  """Sharding of a [batch, seq, ...] array: batch over the data-parallel axes, the rest replicated."""
  spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)


def shard_params(params, config: ZayaConfig, mesh, rules=LOGICAL_AXIS_RULES):
  """Places params on the mesh by the rules (a dimension that does not divide the axis stays replicated)."""
  shardings = param_shardings(config, mesh, rules)
  return jax.tree.map(lambda x, s: jax.device_put(x, divisible(s, x.shape)), params, shardings)


def divisible(sharding: NamedSharding, shape) -> NamedSharding:
  """Drops mesh axes from dimensions they do not divide (e.g. 2 kv heads over tensor=4)."""
  return NamedSharding(sharding.mesh, divisible_spec(sharding.spec, shape, sharding.mesh.shape))


def divisible_spec(spec: PartitionSpec, shape, sizes) -> PartitionSpec:
  """`spec` with the mesh axes dropped from every dimension they do not divide; sizes: {mesh axis: size} (no
  devices needed, so memory plans can use it for meshes larger than this machine's)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    n = math.prod(sizes[a] for a in axis_names(axes))
    out.append(axes if n and dim % n == 0 else None)
  return PartitionSpec(*out)


def axis_names(axes) -> tuple[str, ...]:
  """The mesh axis names of one PartitionSpec entry (None, a name, or a tuple of names)."""
  return (axes,) if isinstance(axes, str) else tuple(axes or ())
