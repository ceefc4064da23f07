"""Per-device training memory of ZAYA1-8B under several meshes, from shapes alone (nothing is allocated).

  python benchmarks/memory_plan.py                       # the default meshes, 1 sequence per micro-batch
  python benchmarks/memory_plan.py --micro_batch=2       # sequences per device per micro-batch
  python benchmarks/memory_plan.py --no_activations      # states only (skips the activation traces)

No devices are needed: every shape comes from `jax.eval_shape`, and per-device shard shapes are computed
arithmetically from the PartitionSpecs that `nn.logical_to_mesh_axes` gives for the parameters' logical axes
under `zaya_jax.sharding.LOGICAL_AXIS_RULES` and a mesh given only as axis sizes (data, fsdp, expert, tensor).
As `zaya_jax.sharding.divisible` does, a mesh axis that does not divide a dimension is dropped from it (that
dimension is then stored whole, i.e. replicated, on every device and counted fully).

Columns (GiB = 2**30 bytes, per device):
  params      fp32 master parameters (config.model.param_dtype), balancing biases included. The rules leave
              the router MLP (fc1/fc2/out_proj), the CCA conv kernels, norms and scales replicated (about
              0.07 GiB fp32 in all), so FSDP 64 holds a little more than 1/64 of the model.
  grads       fp32 gradients, sharded like the parameters (they exist during the update).
  optimizer   `make_optimizer(config.optim)` state from `jax.eval_shape(optimizer.init, params)`: Muon momentum
              (fp32, one per Muon matrix), AdamW mu and nu (fp32) for the rest, counts and Newton-Schulz
              coefficients; every leaf shaped like a parameter is sharded like that parameter, the rest
              (scalars) is replicated. Plus the router balancing state (m, v [L, E+1] fp32, replicated).
  act remat   activations of one micro-batch with full rematerialisation of every decoder block.
  act none    activations of one micro-batch without rematerialisation.
  total       params + grads + optimizer + act remat.

Activations. Measured, not guessed: the residuals JAX autodiff saves for the backward pass of the training loss
(`forward` + `next_token_loss`, bf16 compute, fp32 residual stream and log-softmax) are the leaves of the
function `jax.vjp` returns, and `jax.eval_shape` gives their shapes without running anything. With
b = micro_batch sequences per device of S = config.train.seq_len tokens:

  per_seq(L layers) = residual bytes(batch 2) - residual bytes(batch 1)   (the token-dependent part only)
  layer             = per_seq(3 layers) - per_seq(2 layers)               (one scanned block)
  outside           = per_seq(L) - L * layer                              (embedding, final norm, logits, loss)
  act none          = b * per_seq(L)
  act remat         = b * (L * S * (4 D + 2 R) + layer + outside)

where 4 D + 2 R bytes per token is a block's input that full remat keeps (the fp32 residual stream of width
D = hidden_size and the bf16 router EDA carry of width R = router_hidden_size), `layer` is the one block
recomputed at a time in the backward pass, and `outside` is not rematerialised. The dominant terms, per
sequence: the fp32 log-softmax over the vocabulary, 4 V bytes per token (V = 262,272: 4 GiB at S = 4096);
the attention's materialised fp32 scores and probabilities, bf16 probabilities and bool mask, 11 H S bytes per
token per layer (1.4 GiB per layer at S = 4096; zaya_jax/layers.py `attend` is not a fused kernel, and a
flash-style kernel would remove this S^2 term); per token per layer some 10-20 bf16/fp32 vectors of width D,
H*d, the conv channels and the expert intermediate (2 I + I).

Assumptions and limits of the activation estimate:
  - The micro-batch is per device; gradient accumulation of global_batch / (data*fsdp*expert) / micro_batch
    micro-batches makes up a step ("seqs/dev/step" column). Peak memory counts one micro-batch.
  - Residuals are counted as autodiff records them, before XLA's fusion and buffer reuse: an upper bound of
    what a compiled step keeps (XLA usually drops some duplicates, e.g. fp32 scores beside fp32 probs).
  - The unsharded expert dispatch is traced; under expert parallelism a device computes about its own number
    of tokens (balanced routing, dropless, no skip), so the per-device estimate is the same. Capacity
    padding (moe_capacity_factor) and the all-to-all buffers are not included.
  - Activations are not divided by the tensor axis (all listed meshes have tensor = 1).
  - bf16 copies of the weights that autodiff also saves (b-independent) are left out: FSDP re-gathers them in
    the backward pass. So are transient buffers: all-gathered weights of the current layer under FSDP,
    Muon's Newton-Schulz work on gathered gradient matrices, XLA scratch and fragmentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
from collections.abc import Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402

from zaya_jax import api  # noqa: E402
from zaya_jax.config import ZayaConfig  # noqa: E402
from zaya_jax.sharding import LOGICAL_AXIS_RULES, MESH_AXES, axis_names, divisible_spec, mesh_shape  # noqa: E402
from zaya_jax.train import balancing as bal  # noqa: E402
from zaya_jax.train import steps  # noqa: E402
from zaya_jax.train.optimizer import make_optimizer  # noqa: E402

GiB = 2 ** 30

# (name, axis sizes, devices); -1 = whatever is left.
DEFAULT_MESHES: tuple[tuple[str, dict[str, int], int], ...] = (
    ("1 device", {}, 1),
    ("FSDP 8", {"fsdp": -1}, 8),
    ("EP 8", {"expert": -1}, 8),
    ("FSDP 64", {"fsdp": -1}, 64),
    ("EP 8 x data 8", {"expert": 8, "data": -1}, 64),
    ("FSDP 8 x EP 8", {"expert": 8, "fsdp": -1}, 64),
    ("FSDP 4 x EP 16", {"expert": 16, "fsdp": -1}, 64),
    ("FSDP 16 x EP 16", {"expert": 16, "fsdp": -1}, 256),
)


# Shard arithmetic ----------------------------------------------------------------------------------------------

def axis_sizes_of(axis_sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """{mesh axis: size} for all of (data, fsdp, expert, tensor), with -1 resolved."""
  return dict(zip(MESH_AXES, mesh_shape(axis_sizes, num_devices)))


def shard_shape(shape: Sequence[int], spec: PartitionSpec, sizes: Mapping[str, int]) -> tuple[int, ...]:
  """Per-device shape of an array of `shape` laid out by `spec` (after `divisible_spec`)."""
  spec = divisible_spec(spec, shape, sizes)
  return tuple(dim // math.prod(sizes[a] for a in axis_names(axes)) for dim, axes in zip(shape, tuple(spec)))


def num_shards(shape: Sequence[int], spec: PartitionSpec, sizes: Mapping[str, int]) -> int:
  """Distinct pieces the array is cut into; every device holds one, devices / num_shards hold each piece."""
  spec = divisible_spec(spec, shape, sizes)
  return math.prod(sizes[a] for axes in spec for a in axis_names(axes))


def nbytes(shape, dtype) -> int:
  return math.prod(shape) * jnp.dtype(dtype).itemsize


def abstract_params(config: ZayaConfig):
  return jax.eval_shape(functools.partial(api.init_params, config), jax.random.key(0))


def mesh_param_specs(config: ZayaConfig, rules=LOGICAL_AXIS_RULES):
  """PartitionSpec (mesh axes) of every parameter, from its logical axes and the rules."""
  logical = api.logical_axes(config)
  return jax.tree.map(lambda s: nn.logical_to_mesh_axes(tuple(s), rules), logical,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def _dict_path(path) -> tuple[str, ...]:
  """The trailing run of dict keys of a key path (an optimizer-state leaf's path ends in its parameter's)."""
  keys = []
  for k in reversed(path):
    if not isinstance(k, jax.tree_util.DictKey):
      break
    keys.append(str(k.key))
  return tuple(reversed(keys))


def state_specs(state, params, param_specs):
  """A spec for each leaf of `state`: its parameter's spec when the leaf mirrors a parameter (same path tail
  and shape, e.g. Muon momentum, AdamW mu/nu), else replicated."""
  by_path = {}
  for (path, leaf), spec in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(
      param_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))):
    by_path[_dict_path(path)] = (tuple(leaf.shape), spec)

  def spec_of(path, leaf):
    hit = by_path.get(_dict_path(path))
    if hit is not None and hit[0] == tuple(leaf.shape):
      return hit[1]
    return PartitionSpec()
  return jax.tree_util.tree_map_with_path(spec_of, state)


def per_device_bytes(tree, specs, sizes: Mapping[str, int]) -> int:
  """Bytes one device holds of `tree` (ShapeDtypeStructs) laid out by `specs` (PartitionSpecs)."""
  leaves = jax.tree.leaves(tree)
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
  assert len(leaves) == len(spec_leaves), (len(leaves), len(spec_leaves))
  return sum(nbytes(shard_shape(l.shape, s, sizes), l.dtype) for l, s in zip(leaves, spec_leaves))


def total_bytes(tree) -> int:
  return sum(nbytes(l.shape, l.dtype) for l in jax.tree.leaves(tree))


# Activations ---------------------------------------------------------------------------------------------------

def residual_bytes(config: ZayaConfig, batch: int, seq: int) -> int:
  """Bytes of everything autodiff saves for the backward pass of the training loss (jax.eval_shape of the
  leaves of jax.vjp's function; no allocation)."""
  params = abstract_params(config)

  def loss(p, tokens):
    logits = api.forward(p, config, tokens)
    return steps.next_token_loss(logits, tokens, jnp.ones_like(tokens))[0]

  res = jax.eval_shape(lambda p, t: jax.vjp(loss, p, t)[1], params, jax.ShapeDtypeStruct((batch, seq), jnp.int32))
  return total_bytes(res)


def _with_layers(config: ZayaConfig, n: int) -> ZayaConfig:
  return dataclasses.replace(config, num_hidden_layers=n, layer_types=tuple(config.layer_types[:1]) * n)


@functools.lru_cache(maxsize=None)
def activation_model(config: ZayaConfig, seq: int) -> dict[str, int]:
  """Per-sequence activation bytes: {"none", "remat", "layer", "outside", "carry"} (see the module docstring)."""
  per_seq = lambda c: residual_bytes(c, 2, seq) - residual_bytes(c, 1, seq)
  L = config.num_hidden_layers
  full = per_seq(config)
  layer = per_seq(_with_layers(config, 3)) - per_seq(_with_layers(config, 2))
  outside = full - L * layer
  carry = L * seq * (4 * config.hidden_size + jnp.dtype(config.compute_dtype).itemsize * config.router_hidden_size)
  return {"none": full, "remat": carry + layer + outside, "layer": layer, "outside": outside, "carry": carry}


# The plan ------------------------------------------------------------------------------------------------------

def plan(config: ZayaConfig, optim_cfg, meshes, *, global_batch: int, seq: int, micro_batch: int = 1,
         activations: bool = True, total_steps: int = 1000):
  """One row per mesh: a dict of per-device bytes and the mesh facts."""
  params = abstract_params(config)
  specs = mesh_param_specs(config)
  opt_state = jax.eval_shape(make_optimizer(optim_cfg, total_steps).init, params)
  opt_specs = state_specs(opt_state, params, specs)
  balancing = jax.eval_shape(lambda: bal.init_balancing(config.num_hidden_layers, config.num_experts))
  act = activation_model(config, seq) if activations else None
  rows = []
  for name, axes, devices in meshes:
    sizes = axis_sizes_of(axes, devices)
    dp = sizes["data"] * sizes["fsdp"] * sizes["expert"]
    p = per_device_bytes(params, specs, sizes)
    o = per_device_bytes(opt_state, opt_specs, sizes) + total_bytes(balancing)
    row = {"mesh": name, "devices": devices, "sizes": sizes, "seqs_per_device": global_batch / dp,
           "params": p, "grads": p, "optimizer": o}
    if act is not None:
      row["act_remat"] = micro_batch * act["remat"]
      row["act_none"] = micro_batch * act["none"]
    row["total"] = p + p + o + row.get("act_remat", 0)
    rows.append(row)
  return rows


def markdown(rows) -> str:
  g = lambda b: f"{b / GiB:.2f}"
  has_act = "act_remat" in rows[0]
  head = ["mesh", "devices", "data×fsdp×expert×tensor", "seqs/dev/step", "params", "grads", "optimizer"]
  head += ["act remat", "act none"] if has_act else []
  head += ["total"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
  for r in rows:
    s = r["sizes"]
    cells = [r["mesh"], str(r["devices"]), "×".join(str(s[a]) for a in MESH_AXES), f"{r['seqs_per_device']:g}",
             g(r["params"]), g(r["grads"]), g(r["optimizer"])]
    cells += [g(r["act_remat"]), g(r["act_none"])] if has_act else []
    cells += [g(r["total"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--micro_batch", type=int, default=1, help="sequences per device per micro-batch")
  ap.add_argument("--seq_len", type=int, default=None, help="default: config.train.seq_len")
  ap.add_argument("--no_activations", action="store_true")
  args = ap.parse_args(argv)

  from configs import zaya1_8b
  cfg = zaya1_8b.get_config()
  config = ZayaConfig.from_dict(cfg.model.to_dict())
  seq = args.seq_len or cfg.train.seq_len
  rows = plan(config, cfg.optim, DEFAULT_MESHES, global_batch=cfg.train.batch_size, seq=seq,
              micro_batch=args.micro_batch, activations=not args.no_activations, total_steps=cfg.train.steps)

  n = api.count_params(config)["total"]
  params = abstract_params(config)
  specs = mesh_param_specs(config)
  biases = sum(nbytes(l.shape, l.dtype) for path, l in jax.tree_util.tree_flatten_with_path(params)[0]
               if _dict_path(path)[-1:] == ("balancing_biases",))
  for r in rows:  # every piece of every parameter counted once: per-device bytes x shards = the model
    pieces = sum(nbytes(shard_shape(l.shape, s, r["sizes"]), l.dtype) * num_shards(l.shape, s, r["sizes"])
                 for l, s in zip(jax.tree.leaves(params),
                                 jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))))
    assert pieces - biases == 4 * n, (r["mesh"], pieces, biases, n)

  print(f"ZAYA1-8B: {n:,} parameters (count_params) = {4 * n / GiB:.2f} GiB fp32, + {biases:,} bytes of "
        f"balancing biases; global batch {cfg.train.batch_size} x {seq} tokens; micro-batch "
        f"{args.micro_batch} sequence(s) per device; GiB per device.\n")
  print(markdown(rows))
  if not args.no_activations:
    a = activation_model(config, seq)
    print(f"\nActivations per sequence of {seq} tokens: no remat {a['none'] / GiB:.2f} GiB = "
          f"{config.num_hidden_layers} blocks x {a['layer'] / GiB:.3f} GiB + {a['outside'] / GiB:.2f} GiB outside "
          f"the blocks (embedding, logits, loss); full remat {a['remat'] / GiB:.2f} GiB = block inputs "
          f"{a['carry'] / GiB:.2f} + one block {a['layer'] / GiB:.3f} + outside {a['outside'] / GiB:.2f}.")


if __name__ == "__main__":
  main()
