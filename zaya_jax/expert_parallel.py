"""Expert-parallel MoE: experts split over the mesh's `expert` axis, tokens sent to them and back.

Inside one `jax.shard_map`, each device holds N_loc tokens and E / ep experts. Route -> send each token to the
device holding its expert -> local expert FFN on what arrived -> send the results back -> un-permute and scale by
the combine weight. Two transports compute the same function (`transport`, config `moe_transport`):

- 'all_to_all': a capacity-padded send buffer [ep, capacity, D] (slot = destination device, rank among that
  device's tokens) exchanged with `jax.lax.all_to_all`. Works on every backend, but always moves
  ep * capacity rows per device each way, padding included.
- 'ragged': tokens sorted by destination device (stable) and exchanged with `jax.lax.ragged_all_to_all`, which
  moves only the routed rows; the per-pair sizes travel first (an `all_gather` of each device's send sizes and
  offsets), and the results come back through the inverse plan. The receive buffer keeps the static worst case
  of ep * capacity rows (the unwritten ones take the skip route). XLA:CPU does not implement ragged-all-to-all
  (jax 0.10: UNIMPLEMENTED at run time), so this is the GPU transport; 'auto' picks it on GPU backends.

Both keep at most `capacity` tokens per (source, destination) pair, the first ones in token order, so they drop
the same tokens. capacity = N_loc (the default, `capacity_factor=None`) is dropless; a smaller capacity drops
the overflow, and the count of dropped tokens is returned.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from zaya_jax import moe
from zaya_jax.config import MOE_TRANSPORTS

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


class RaggedPlan(NamedTuple):
  """One device's side of a ragged dispatch: its tokens sorted by destination device, and what to send of them."""
  order: jax.Array  # [N] token in each send-buffer row: by destination device (stable), skip tokens last
  row: jax.Array  # [N] send-buffer row of each token; N (a zero row) for skip/dropped tokens
  local_expert: jax.Array  # [N] expert index on the destination device of each send-buffer row
  send_sizes: jax.Array  # [ep] rows sent to each device (its routed tokens, at most cap)
  input_offsets: jax.Array  # [ep] first send-buffer row of each device's tokens
  dropped: jax.Array  # [] int32 routed tokens that did not fit


class RaggedExchange(NamedTuple):
  """One device's offsets and sizes for the dispatch `ragged_all_to_all` and the inverse one that returns."""
  output_offsets: jax.Array  # [ep] where this device's slice starts in each destination's receive buffer
  recv_sizes: jax.Array  # [ep] rows received from each source device
  recv_offsets: jax.Array  # [ep] where each source's rows start in this device's receive buffer
  return_offsets: jax.Array  # [ep] where results go back to in each source's send buffer


def resolve_transport(transport: str) -> str:
  """'auto' -> 'ragged' on GPU backends, 'all_to_all' elsewhere (XLA:CPU has no ragged-all-to-all); any other
  name is returned as is."""
  if transport not in MOE_TRANSPORTS:
    raise ValueError(f"transport must be one of {MOE_TRANSPORTS}, got {transport!r}")
  if transport == "auto":
    return "ragged" if jax.default_backend() in ("gpu", "cuda", "rocm") else "all_to_all"
  return transport


def ragged_send_plan(choice_N, num_experts: int, ep: int, cap: int) -> RaggedPlan:
  """Index math of the ragged dispatch on one device: choice in [0, num_experts] (num_experts = skip).

  Tokens are sorted by destination device; each device's first `cap` tokens (in token order, as `send_plan`
  keeps them) are sent, the rest of its section of the send buffer stays behind.
  """
  N = choice_N.shape[0]
  e_loc = num_experts // ep
  routed = choice_N < num_experts
  dest_N = jnp.where(routed, choice_N // e_loc, ep).astype(jnp.int32)  # ep = not sent (sorts last)
  order = jnp.argsort(dest_N, stable=True).astype(jnp.int32)
  counts = jnp.sum(jax.nn.one_hot(dest_N, ep, dtype=jnp.int32), axis=0)  # one_hot(ep) is all zeros
  input_offsets = (jnp.cumsum(counts) - counts).astype(jnp.int32)
  send_sizes = jnp.minimum(counts, cap).astype(jnp.int32)
  position = jnp.zeros((N,), jnp.int32).at[order].set(jnp.arange(N, dtype=jnp.int32))
  kept = routed & (position - input_offsets[jnp.minimum(dest_N, ep - 1)] < cap)
  row = jnp.where(kept, position, N).astype(jnp.int32)
  local_expert = (choice_N % e_loc).astype(jnp.int32)[order]
  return RaggedPlan(order, row, local_expert, send_sizes, input_offsets, jnp.sum(counts - send_sizes))


def ragged_exchange(send_sizes_SD, input_offsets_SD, me) -> RaggedExchange:
  """Device `me`'s offsets for both ragged_all_to_alls, from every device's [source, destination] send sizes and
  input offsets (all devices compute the same layout, so no further exchange is needed).

  A destination's receive buffer holds the rows of source 0, then source 1, ... packed.
  """
  start_SD = jnp.cumsum(send_sizes_SD, axis=0) - send_sizes_SD  # first row of source s in destination d's buffer
  return RaggedExchange(start_SD[me], send_sizes_SD[:, me], start_SD[:, me], input_offsets_SD[:, me])


def _local_moe(x_ND, choice_N, weight_N, gate_up, down, *, num_experts, ep, cap, moe_impl, block_size,
               batch_axes):
  """Per-device body of the shard_map, all_to_all transport (axis `expert` of size ep is bound)."""
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


def _local_moe_ragged(x_ND, choice_N, weight_N, gate_up, down, *, num_experts, ep, cap, moe_impl, block_size,
                      batch_axes):
  """Per-device body of the shard_map, ragged_all_to_all transport (axis `expert` of size ep is bound)."""
  N, D = x_ND.shape
  plan = ragged_send_plan(choice_N, num_experts, ep, cap)
  sizes_offsets = jax.lax.all_gather(jnp.stack([plan.send_sizes, plan.input_offsets]), EXPERT_AXIS)  # [ep, 2, ep]
  ex = ragged_exchange(sizes_offsets[:, 0], sizes_offsets[:, 1], jax.lax.axis_index(EXPERT_AXIS))
  # Each source sends at most cap rows here: ep * cap receive rows cannot overflow (with cap = N_loc it is the
  # dropless worst case of every token of the expert group going to this device). A bound known at trace time.
  R = ep * cap
  dispatch = lambda operand, output: jax.lax.ragged_all_to_all(
      operand, output, plan.input_offsets, plan.send_sizes, ex.output_offsets, ex.recv_sizes,
      axis_name=EXPERT_AXIS)
  recv_RD = dispatch(jnp.take(x_ND, plan.order, axis=0), jnp.zeros((R, D), x_ND.dtype))
  # Rows nobody writes keep expert id E_loc, the skip route: zero output.
  recv_ids_R = dispatch(plan.local_expert, jnp.full((R,), num_experts // ep, jnp.int32))
  ones = jnp.ones((R,), x_ND.dtype)  # the combine weight is applied back on the source device
  y_RD = moe.expert_ffn(recv_RD, recv_ids_R, ones, gate_up, down, moe_impl=moe_impl, block_size=block_size)
  back_ND = jax.lax.ragged_all_to_all(y_RD, jnp.zeros((N, D), y_RD.dtype), ex.recv_offsets, ex.recv_sizes,
                                      ex.return_offsets, plan.send_sizes, axis_name=EXPERT_AXIS)
  weight = jnp.where(choice_N < num_experts, weight_N, jnp.zeros_like(weight_N))
  out = moe.take_rows(back_ND, plan.row) * weight[:, None].astype(back_ND.dtype)
  return out, jax.lax.psum(plan.dropped, batch_axes)


def expert_parallel_ffn(x_ND, choice_N, weight_N, gate_up_EDF, down_EID, *, mesh, batch_axes, moe_impl: str,
                        block_size: int, capacity_factor: float | None = None, transport: str = "auto"):
  """The top-1 MoE FFN with experts sharded over mesh axis `expert` -> (out [N, D], dropped tokens []).

  x, choice, weight are split over `batch_axes` (their first dimension); every other mesh axis replicates.
  Same function as `moe.expert_ffn` when nothing is dropped, with either transport ('all_to_all', 'ragged',
  'auto'; see the module docstring).
  """
  local_moe = _local_moe_ragged if resolve_transport(transport) == "ragged" else _local_moe
  ep = mesh.shape[EXPERT_AXIS]
  num_experts = gate_up_EDF.shape[0]
  if num_experts % ep:
    raise ValueError(f"{num_experts} experts cannot be split evenly over expert axis of size {ep}")
  n_shards = math.prod(mesh.shape[a] for a in batch_axes)
  N = x_ND.shape[0]
  if N % n_shards:
    raise ValueError(f"{N} tokens cannot be split over the {n_shards} data-parallel shards")
  cap = capacity(N // n_shards, ep, capacity_factor)
  body = lambda x, c, w, gu, dn: local_moe(x, c, w, gu, dn, num_experts=num_experts, ep=ep, cap=cap,
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
