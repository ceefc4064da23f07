"""Helpers shared by the Pallas kernels: backend defaults, Triton compiler parameters, tile masks.

Every kernel here is written for Pallas' Triton backend, the one GPU path that lowers for both ROCm and CUDA
(Mosaic GPU, Pallas' default on GPU, refuses ROCm). Refs are whole arrays in HBM; kernels index them with
`pl.ds` windows and mask the loads/stores that reach past an array edge.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from jax.experimental.pallas import triton as plgpu


_FORCED_INTERPRET: contextvars.ContextVar[bool | None] = contextvars.ContextVar("interpret", default=None)


@contextlib.contextmanager
def interpret_mode(interpret: bool):
  """Overrides the default of every kernel called inside (e.g. False to cross-lower a whole model for GPU
  platforms from a CPU machine, where the default would be to interpret)."""
  token = _FORCED_INTERPRET.set(interpret)
  try:
    yield
  finally:
    _FORCED_INTERPRET.reset(token)


def resolve_interpret(interpret: bool | None) -> bool:
  """`interpret` as given, else the `interpret_mode` in force, else True when JAX's default backend is the
  CPU (Pallas only interprets there)."""
  if interpret is None:
    forced = _FORCED_INTERPRET.get()
    return jax.default_backend() == "cpu" if forced is None else forced
  return bool(interpret)


def triton_params(num_warps: int, num_stages: int) -> plgpu.CompilerParams:
  """Compiler parameters that select the Triton lowering (instead of Mosaic GPU) for a pallas_call."""
  return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def check_block(name: str, size: int) -> None:
  """Triton tiles need power-of-two sides, and tl.dot at least 16 along each."""
  if size < 16 or size & (size - 1):
    raise ValueError(f"{name} must be a power of two >= 16, got {size}")


def edge_mask(start, size: int, extent: int):
  """[size] bool: which of the indices start..start+size-1 lie inside [0, extent).

  None when `extent` is a multiple of `size`, so aligned shapes pay for no mask (tiles start at multiples of
  `size` in every kernel here).
  """
  if extent % size == 0:
    return None
  return start + jnp.arange(size) < extent


def tile_mask(row_mask, col_mask):
  """Combine optional [R] and [C] masks into one mask that broadcasts to [R, C] (None when both are None)."""
  if row_mask is None and col_mask is None:
    return None
  if row_mask is None:
    return col_mask[None, :]
  if col_mask is None:
    return row_mask[:, None]
  return row_mask[:, None] & col_mask[None, :]


def load(ref, mask=None):
  """Masked tile load; masked-off elements read as 0 (so they add nothing to sums and dot products)."""
  if mask is None:
    return plgpu.load(ref)
  return plgpu.load(ref, mask=jnp.broadcast_to(mask, ref.shape), other=0)


def store(ref, value, mask=None):
  """Masked tile store: elements where `mask` is False keep what the output buffer holds."""
  if mask is None:
    plgpu.store(ref, value)
  else:
    plgpu.store(ref, value, mask=jnp.broadcast_to(mask, ref.shape))
