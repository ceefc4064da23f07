"""Expert-parallel MoE: experts split over the mesh's `expert` axis, tokens sent to them and back.

Inside one `jax.shard_map`, each device holds N_loc tokens and E / ep experts. Route -> pack a send buffer
[ep, capacity, D] (slot = destination device, rank among that device's tokens) -> `all_to_all` over `expert`
-> local expert FFN on what arrived -> `all_to_all` back -> un-permute and scale by the combine weight.
The transport is capacity-padded (`jax.lax.all_to_all`, works on every backend; `ragged_all_to_all` is not
implemented by XLA:CPU). capacity = N_loc (the default, `capacity_factor=None`) is dropless; a smaller
capacity drops the overflow, and the count of dropped tokens is returned.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from zaya_jax import moe

EXPERT_AXIS = "expert"
BATCH_AXES = ("data", "fsdp", "expert")  # mesh axes that split the global batch (zaya_jax/sharding.py)


class SendPlan(NamedTuple):
  """Where each local token goes in the [ep * capacity] send buffer, and what fills the buffer."""
  slot: jax.Array  # [N] buffer slot of each token; ep * capacity (a zero row) for skip/dropped tokens
  gather_rows: jax.Array  # [ep * capacity] token in each slot; N (a zero row) for empty slots
  local_expert: jax.Array  # [ep * capacity] expert index on the destination device; E_loc = nothing
  dropped: jax.Array  # [] int32 routed tokens that did not fit


def capacity(num_local_tokens: int, ep: int, capacity_factor: float | None) -> int:
  """Slots per (source, destination) pair: N_loc when dropless, else ceil(factor * N_loc / ep)."""
  if capacity_factor is None:
    return num_local_tokens
  if capacity_factor <= 0:
    raise ValueError(f"capacity_factor must be positive, got {capacity_factor}")
  return max(1, min(num_local_tokens, math.ceil(capacity_factor * num_local_tokens / ep)))


def send_plan(choice_N, num_experts: int, ep: int, cap: int) -> SendPlan:
  """Index math of the dispatch: choice in [0, num_experts] (num_experts = skip), experts split evenly."""
  N = choice_N.shape[0]
  e_loc = num_experts // ep
  routed = choice_N < num_experts
  dest = jnp.where(routed, choice_N // e_loc, ep)  # ep = not sent
  one_hot = jax.nn.one_hot(dest, ep + 1, dtype=jnp.int32)
  rank = jnp.take_along_axis(jnp.cumsum(one_hot, axis=0) - one_hot, dest[:, None], axis=1)[:, 0]
  kept = routed & (rank < cap)
  slot = jnp.where(kept, dest * cap + rank, ep * cap).astype(jnp.int32)
  gather_rows = jnp.full((ep * cap + 1,), N, jnp.int32).at[slot].set(jnp.arange(N, dtype=jnp.int32))[:-1]
  local_expert = jnp.full((ep * cap + 1,), e_loc, jnp.int32).at[slot].set(
      (choice_N % e_loc).astype(jnp.int32))[:-1]
  return SendPlan(slot, gather_rows, local_expert, jnp.sum(routed & ~kept).astype(jnp.int32))


def _local_moe(x_ND, choice_N, weight_N, gate_up, down, *, num_experts, ep, cap, moe_impl, block_size,
               batch_axes):
  """Per-device body of the shard_map (axis `expert` of size ep is bound)."""
  D = x_ND.shape[1]
  plan = send_plan(choice_N, num_experts, ep, cap)
  send = moe.take_rows(x_ND, plan.gather_rows).reshape(ep, cap, D)
  ids = plan.local_expert.reshape(ep, cap)
  recv = jax.lax.all_to_all(send, EXPERT_AXIS, 0, 0, tiled=True)
  recv_ids = jax.lax.all_to_all(ids, EXPERT_AXIS, 0, 0, tiled=True)
  ones = jnp.ones((ep * cap,), x_ND.dtype)  # the combine weight is applied back on the source device
  y = moe.expert_ffn(recv.reshape(ep * cap, D), recv_ids.reshape(-1), ones, gate_up, down,
                     moe_impl=moe_impl, block_size=block_size)
  back = jax.lax.all_to_all(y.reshape(ep, cap, D), EXPERT_AXIS, 0, 0, tiled=True).reshape(ep * cap, D)
  weight = jnp.where(choice_N < num_experts, weight_N, jnp.zeros_like(weight_N))
  out = moe.take_rows(back, plan.slot) * weight[:, None].astype(back.dtype)
  return out, jax.lax.psum(plan.dropped, batch_axes)


def expert_parallel_ffn(x_ND, choice_N, weight_N, gate_up_EDF, down_EID, *, mesh, batch_axes, moe_impl: str,
                        block_size: int, capacity_factor: float | None = None):
  """The top-1 MoE FFN with experts sharded over mesh axis `expert` -> (out [N, D], dropped tokens []).

  x, choice, weight are split over `batch_axes` (their first dimension); every other mesh axis replicates.
  Same function as `moe.expert_ffn` when nothing is dropped.
  """
  ep = mesh.shape[EXPERT_AXIS]
  num_experts = gate_up_EDF.shape[0]
  if num_experts % ep:
    raise ValueError(f"{num_experts} experts cannot be split evenly over expert axis of size {ep}")
  n_shards = math.prod(mesh.shape[a] for a in batch_axes)
  N = x_ND.shape[0]
  if N % n_shards:
    raise ValueError(f"{N} tokens cannot be split over the {n_shards} data-parallel shards")
  cap = capacity(N // n_shards, ep, capacity_factor)
  body = lambda x, c, w, gu, dn: _local_moe(x, c, w, gu, dn, num_experts=num_experts, ep=ep, cap=cap,
                                            moe_impl=moe_impl, block_size=block_size, batch_axes=batch_axes)
  tokens = P(batch_axes)
  fn = jax.shard_map(body, mesh=mesh, in_specs=(tokens, tokens, tokens, P(EXPERT_AXIS), P(EXPERT_AXIS)),
                     out_specs=(tokens, P()), check_vma=False)
  return fn(x_ND, choice_N, weight_N, gate_up_EDF, down_EID)


def active_expert_mesh():
  """The mesh set with `jax.set_mesh` if it has an `expert` axis of size > 1, else None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or EXPERT_AXIS not in mesh.axis_names or mesh.shape[EXPERT_AXIS] == 1:
    return None
  return mesh
