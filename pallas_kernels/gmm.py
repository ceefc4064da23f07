"""Grouped matmuls for MoE experts: Triton-style Pallas kernels beside pure-JAX references.

`gmm(lhs [M,K], rhs [G,K,N], group_sizes [G]) -> [M,N]` has `jax.lax.ragged_dot`'s contract: the rows of lhs
are grouped contiguously in group order, row r of group g is multiplied by rhs[g], and rows past
sum(group_sizes) (skip-routed and padding tokens) give zeros. `tgmm` is its weight gradient, per-group
lhs^T @ dout -> [G,K,N]. Both accumulate in fp32 and round once to lhs.dtype.

gmm design: M is cut into block_m-row tiles and a tile that straddles a group boundary is visited once per
group it touches, with the rows of the other groups masked out of the store. The visit list (one "work item"
per (segment, tile) pair) is computed in JAX by `group_offsets` / `tile_group_table` and read inside the
kernel; the rows past sum(group_sizes) form one extra segment whose items store zeros, so every output row is
written exactly once and the output buffer needs no zero fill. The grid is static (Triton has no dynamic grid),
sized for the worst case; items past the real count do nothing.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels._common import check_block, edge_mask, load, resolve_interpret, store, tile_mask, triton_params

F32 = jnp.float32
I32 = jnp.int32
_MATMUL = (((1,), (0,)), ((), ()))             # [m,k] @ [k,n]
_MATMUL_RHS_T = (((1,), (1,)), ((), ()))       # [m,k] @ [n,k]^T
_MATMUL_LHS_T = (((0,), (0,)), ((), ()))       # [m,k]^T @ [m,n]


# ---------------------------------------------------------------------------------------------------------
# Index math (plain JAX, run outside the kernels)


def group_offsets(group_sizes_G, num_rows: int):
  """Row offsets of the G+1 row segments of lhs -> [G+2] int32.

  Segment g < G holds group g's rows [offsets[g], offsets[g+1]); segment G holds the rows past
  sum(group_sizes), up to num_rows. Offsets are clamped to num_rows, so sizes summing past it (outside
  the contract) cut the last groups short instead of reading past lhs.
  """
  ends = jnp.minimum(jnp.cumsum(group_sizes_G.astype(I32)), num_rows)
  return jnp.concatenate([jnp.zeros((1,), I32), ends.astype(I32), jnp.full((1,), num_rows, I32)])


def num_work_items(num_rows: int, num_groups: int, block_m: int) -> int:
  """Static bound on gmm work items: each row tile once, plus one more per boundary between the G+1 segments."""
  return pl.cdiv(num_rows, block_m) + num_groups


def tile_group_table(offsets_S1, num_rows: int, block_m: int):
  """The gmm work list -> (segment [W], tile [W]) int32, W = num_work_items(num_rows, G, block_m).

  `offsets_S1` is `group_offsets(...)` ([G+2]). Item w covers the rows of segment[w] that lie in row tile
  tile[w] (rows [tile*block_m, (tile+1)*block_m)). Items are ordered by segment, then tile; empty segments
  have none. Items past the real count get segment G+1, which the kernel skips, and tile 0.
  """
  num_segments = offsets_S1.shape[0] - 1
  num_items = num_work_items(num_rows, num_segments - 1, block_m)
  starts, ends = offsets_S1[:-1], offsets_S1[1:]
  first_tile = starts // block_m
  count = jnp.where(ends > starts, (ends - 1) // block_m - first_tile + 1, 0)
  items_end = jnp.cumsum(count)
  item = jnp.arange(num_items, dtype=I32)
  segment = jnp.searchsorted(items_end, item, side="right").astype(I32)  # num_segments once past the end
  seg = jnp.minimum(segment, num_segments - 1)
  tile = jnp.where(segment < num_segments, first_tile[seg] + item - (items_end - count)[seg], 0)
  return segment, tile.astype(I32)


# ---------------------------------------------------------------------------------------------------------
# Kernels


class KernelConfig(NamedTuple):
  """Static tiling and launch parameters (hashable: it is a nondiff argument of the custom VJPs)."""
  block_m: int
  block_n: int
  block_k: int
  num_warps: int
  num_stages: int
  interpret: bool


# Launch parameters of gmm / tgmm where the caller gives none, by GPU vendor (`launch_defaults`). On an H200
# (README; benchmarks/gpu_kernels.py at ZAYA1-8B shapes, bf16) 128x128x64 tiles, 8 warps and 3 stages ran the
# grouped matmuls 1.5-3x faster than 64x64x32 / 4 / 2 (fwd+bwd 1.9-2.3x), except down_proj at 4k tokens (0.85x).
# Elsewhere (ROCm, interpret mode) the smaller tiles stay: 3 stages of 128x64 + 64x128 bf16 tiles take 96 KiB of
# shared memory, more than a CDNA3 CU's 64 KiB of LDS. No AMD GPU has run these kernels yet.
NVIDIA_LAUNCH = dict(block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3)
PORTABLE_LAUNCH = dict(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=2)


def launch_defaults(device_kind: str) -> dict:
  """gmm / tgmm launch parameters for a device of this `device_kind` (e.g. "NVIDIA H200")."""
  return dict(NVIDIA_LAUNCH if device_kind.lower().startswith("nvidia") else PORTABLE_LAUNCH)


def _config(interpret, **launch) -> KernelConfig:
  """Fills the launch parameters left None from `launch_defaults` of the default device."""
  defaults = launch_defaults(jax.devices()[0].device_kind)
  launch = {name: defaults[name] if value is None else value for name, value in launch.items()}
  for name in ("block_m", "block_n", "block_k"):
    check_block(name, launch[name])
  return KernelConfig(**launch, interpret=resolve_interpret(interpret))


def _gmm_tile(lhs_ref, rhs_ref, group, m0, n0, cfg: KernelConfig, transpose_rhs: bool):
  """lhs[m0:m0+bm] @ rhs[group][:, n0:n0+bn] (rhs[group]^T when transposed) -> [bm, bn] fp32.

  Rows of neighbouring groups are multiplied too (the store drops them); only reads past the array edges
  are masked.
  """
  bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
  M, K = lhs_ref.shape
  N = rhs_ref.shape[1] if transpose_rhs else rhs_ref.shape[2]
  m_mask, n_mask = edge_mask(m0, bm, M), edge_mask(n0, bn, N)

  def k_step(i, acc):
    k0 = i * bk
    k_mask = edge_mask(k0, bk, K)
    a = load(lhs_ref.at[pl.ds(m0, bm), pl.ds(k0, bk)], tile_mask(m_mask, k_mask))
    if transpose_rhs:
      b = load(rhs_ref.at[group, pl.ds(n0, bn), pl.ds(k0, bk)], tile_mask(n_mask, k_mask))
      return acc + lax.dot_general(a, b, _MATMUL_RHS_T, preferred_element_type=F32)
    b = load(rhs_ref.at[group, pl.ds(k0, bk), pl.ds(n0, bn)], tile_mask(k_mask, n_mask))
    return acc + lax.dot_general(a, b, _MATMUL, preferred_element_type=F32)

  return lax.fori_loop(0, pl.cdiv(K, bk), k_step, jnp.zeros((bm, bn), F32))


def _gmm_kernel(segment_ref, tile_ref, offsets_ref, lhs_ref, rhs_ref, out_ref, *, cfg: KernelConfig,
                transpose_rhs: bool):
  """One work item x one column tile: out[rows of the item, n-tile] = lhs rows @ rhs[group] (or zeros)."""
  item, n_tile = pl.program_id(0), pl.program_id(1)
  num_groups = rhs_ref.shape[0]
  segment = segment_ref[item]
  m0 = tile_ref[item] * cfg.block_m
  n0 = n_tile * cfg.block_n
  out = out_ref.at[pl.ds(m0, cfg.block_m), pl.ds(n0, cfg.block_n)]

  @pl.when(segment <= num_groups)
  def _write_item():
    rows = m0 + jnp.arange(cfg.block_m)
    in_segment = (rows >= offsets_ref[segment]) & (rows < offsets_ref[segment + 1])
    mask = tile_mask(in_segment, edge_mask(n0, cfg.block_n, out_ref.shape[1]))

    @pl.when(segment < num_groups)
    def _matmul():
      acc = _gmm_tile(lhs_ref, rhs_ref, segment, m0, n0, cfg, transpose_rhs)
      store(out, acc.astype(out_ref.dtype), mask)

    @pl.when(segment == num_groups)
    def _zero_tail():
      store(out, jnp.zeros(out.shape, out_ref.dtype), mask)


def _gmm_call(cfg: KernelConfig, lhs_MK, rhs, group_sizes_G, transpose_rhs=False):
  """The gmm pallas_call; rhs is [G,K,N], or [G,N,K] with transpose_rhs (the backward pass, no transpose copy)."""
  M = lhs_MK.shape[0]
  N = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  offsets = group_offsets(group_sizes_G, M)
  segment, tile = tile_group_table(offsets, M, cfg.block_m)
  kernel = functools.partial(_gmm_kernel, cfg=cfg, transpose_rhs=transpose_rhs)
  return pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((M, N), lhs_MK.dtype),
      grid=(segment.shape[0], pl.cdiv(N, cfg.block_n)),
      compiler_params=triton_params(cfg.num_warps, cfg.num_stages),
      interpret=cfg.interpret,
      name="zaya_gmm",
  )(segment, tile, offsets, lhs_MK, rhs)


def _tgmm_kernel(offsets_ref, lhs_ref, dout_ref, out_ref, *, cfg: KernelConfig):
  """out[g, k-tile, n-tile] = sum over group g's rows r of lhs[r, k-tile]^T dout[r, n-tile]."""
  g, k_tile, n_tile = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
  M, K = lhs_ref.shape
  N = dout_ref.shape[1]
  k0, n0 = k_tile * bk, n_tile * bn
  lo, hi = offsets_ref[g], offsets_ref[g + 1]
  k_mask, n_mask = edge_mask(k0, bk, K), edge_mask(n0, bn, N)

  def m_step(t, acc):
    m0 = t * bm
    rows = m0 + jnp.arange(bm)
    in_group = (rows >= lo) & (rows < hi)  # also keeps rows past M out, as hi <= M
    a = load(lhs_ref.at[pl.ds(m0, bm), pl.ds(k0, bk)], tile_mask(in_group, k_mask))
    b = load(dout_ref.at[pl.ds(m0, bm), pl.ds(n0, bn)], tile_mask(in_group, n_mask))
    return acc + lax.dot_general(a, b, _MATMUL_LHS_T, preferred_element_type=F32)

  # An empty group runs zero or one fully masked step and stores zeros.
  acc = lax.fori_loop(lo // bm, (hi + bm - 1) // bm, m_step, jnp.zeros((bk, bn), F32))
  store(out_ref.at[g, pl.ds(k0, bk), pl.ds(n0, bn)], acc.astype(out_ref.dtype), tile_mask(k_mask, n_mask))


def _tgmm_call(cfg: KernelConfig, lhs_MK, dout_MN, group_sizes_G):
  M, K = lhs_MK.shape
  N = dout_MN.shape[1]
  G = group_sizes_G.shape[0]
  return pl.pallas_call(
      functools.partial(_tgmm_kernel, cfg=cfg),
      out_shape=jax.ShapeDtypeStruct((G, K, N), lhs_MK.dtype),
      grid=(G, pl.cdiv(K, cfg.block_k), pl.cdiv(N, cfg.block_n)),
      compiler_params=triton_params(cfg.num_warps, cfg.num_stages),
      interpret=cfg.interpret,
      name="zaya_tgmm",
  )(group_offsets(group_sizes_G, M), lhs_MK, dout_MN.astype(lhs_MK.dtype))


# ---------------------------------------------------------------------------------------------------------
# Public API


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gmm(cfg, lhs_MK, rhs_GKN, group_sizes_G):
  return _gmm_call(cfg, lhs_MK, rhs_GKN, group_sizes_G)


def _gmm_fwd(cfg, lhs_MK, rhs_GKN, group_sizes_G):
  return _gmm_call(cfg, lhs_MK, rhs_GKN, group_sizes_G), (lhs_MK, rhs_GKN, group_sizes_G)


def _gmm_bwd(cfg, residuals, dout_MN):
  lhs_MK, rhs_GKN, group_sizes_G = residuals
  dlhs = _gmm_call(cfg, dout_MN, rhs_GKN, group_sizes_G, transpose_rhs=True)
  drhs = _tgmm_call(cfg, lhs_MK, dout_MN, group_sizes_G)
  return dlhs, drhs, None  # integer group sizes get no cotangent


_gmm.defvjp(_gmm_fwd, _gmm_bwd)


def _check_shapes(lhs_MK, group_sizes_G, num_groups: int, k_dim: int):
  if lhs_MK.ndim != 2 or group_sizes_G.ndim != 1:
    raise ValueError(f"expected lhs [M,K] and group_sizes [G], got {lhs_MK.shape} and {group_sizes_G.shape}")
  if group_sizes_G.shape[0] != num_groups:
    raise ValueError(f"group_sizes has {group_sizes_G.shape[0]} entries for {num_groups} groups")
  if lhs_MK.shape[1] != k_dim:
    raise ValueError(f"contracting sizes differ: lhs {lhs_MK.shape}, other operand has {k_dim}")


def gmm(lhs_MK, rhs_GKN, group_sizes_G, *, block_m=None, block_n=None, block_k=None, num_warps=None,
        num_stages=None, interpret=None):
  """Grouped matmul -> [M, N] in lhs.dtype (fp32 accumulation), differentiable in lhs and rhs.

  lhs_MK [M,K]: rows sorted by group; rhs_GKN [G,K,N] (cast to lhs.dtype); group_sizes_G [G] int. Rows past
  sum(group_sizes) give zeros. Gradients: dlhs = gmm(dout, rhs^T), drhs = tgmm(lhs, dout). Block sizes are
  powers of two >= 16 (multiples of 64 in M/N suit both AMD's 64-wide wavefronts and NVIDIA's warps); those
  left None come from `launch_defaults`. `interpret=None` interprets on CPU only.
  """
  if rhs_GKN.ndim != 3:
    raise ValueError(f"expected rhs [G,K,N], got {rhs_GKN.shape}")
  _check_shapes(lhs_MK, group_sizes_G, rhs_GKN.shape[0], rhs_GKN.shape[1])
  cfg = _config(interpret, block_m=block_m, block_n=block_n, block_k=block_k, num_warps=num_warps,
                num_stages=num_stages)
  return _gmm(cfg, lhs_MK, rhs_GKN.astype(lhs_MK.dtype), group_sizes_G.astype(I32))


def tgmm(lhs_MK, dout_MN, group_sizes_G, num_groups: int, *, block_m=None, block_n=None, block_k=None,
         num_warps=None, num_stages=None, interpret=None):
  """Per-group lhs^T @ dout -> [num_groups, K, N] in lhs.dtype (fp32 accumulation): the gmm weight gradient.

  lhs_MK [M,K] and dout_MN [M,N] share gmm's row grouping; group_sizes_G [num_groups]. Rows past
  sum(group_sizes) are ignored; an empty group gives zeros. The output tile is [block_k, block_n] and the
  reduction runs over block_m rows at a time; launch parameters left None come from `launch_defaults`.
  """
  _check_shapes(lhs_MK, group_sizes_G, num_groups, lhs_MK.shape[1])
  if dout_MN.ndim != 2 or dout_MN.shape[0] != lhs_MK.shape[0]:
    raise ValueError(f"expected dout [M,N] with M = {lhs_MK.shape[0]}, got {dout_MN.shape}")
  cfg = _config(interpret, block_m=block_m, block_n=block_n, block_k=block_k, num_warps=num_warps,
                num_stages=num_stages)
  return _tgmm_call(cfg, lhs_MK, dout_MN, group_sizes_G.astype(I32))


def gmm_reference(lhs_MK, rhs_GKN, group_sizes_G):
  """Pure-JAX gmm: `jax.lax.ragged_dot` with fp32 accumulation, rounded to lhs.dtype -> [M, N]."""
  out = lax.ragged_dot(lhs_MK, rhs_GKN.astype(lhs_MK.dtype), group_sizes_G.astype(I32), preferred_element_type=F32)
  return out.astype(lhs_MK.dtype)


def tgmm_reference(lhs_MK, dout_MN, group_sizes_G, num_groups: int):
  """Pure-JAX tgmm: ragged_dot_general with the row axis ragged and contracted -> [num_groups, K, N]."""
  _check_shapes(lhs_MK, group_sizes_G, num_groups, lhs_MK.shape[1])
  dims = lax.RaggedDotDimensionNumbers(dot_dimension_numbers=_MATMUL_LHS_T, lhs_ragged_dimensions=[0],
                                       rhs_group_dimensions=[])
  out = lax.ragged_dot_general(lhs_MK, dout_MN.astype(lhs_MK.dtype), group_sizes_G.astype(I32), dims,
                               preferred_element_type=F32)
  return out.astype(lhs_MK.dtype)
