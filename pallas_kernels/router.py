"""The ZAYA router (ZAYA1.md §3.6) as one fused Pallas kernel, beside its pure-JAX reference.

Per token: h = x W_down + b_down (+ carry * router_states_scale with EDA); n = RMSNorm(h);
g = GELU(GELU(n W1 + b1) W2 + b2); logits = g W3; p = softmax(logits); choice = argmax(fp32(p) + beta) (lowest
index on ties; class num_experts is the skip route); weight = p[choice] (the unbiased probability).
Returns (choice [N] int32, weight [N], logits [N,C], next_carry [N,R] = h), all but choice in x.dtype, the
activation dtype. Rounding follows `zaya_jax.layers`: matmuls accumulate in fp32 and round to x.dtype once.

Kernel layout: one program per block_t tokens. The router width R is carried as a Python list of block_r-wide
column chunks and every matmul is unrolled over (input chunk, output chunk) pairs, so no operand tile is
larger than [block_r, block_r] (a whole [256,256] bf16 weight is 128 KiB, twice an AMD CU's LDS). The down
projection loops over D in block_d steps (masked at the edge, like the token axis). The small router
weights are zero-padded to whole chunks (R) and a power-of-two class tile (C) outside the kernel, as Pallas
rejects static windows that overhang an array; padded columns stay exactly zero and padded classes are
masked out of the softmax. The gradient is the reference's (`jax.vjp`), since `jax.grad` cannot
differentiate a pallas_call.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels._common import check_block, edge_mask, load, resolve_interpret, store, tile_mask, triton_params
from zaya_jax import moe, routing

F32 = jnp.float32
I32 = jnp.int32


# ---------------------------------------------------------------------------------------------------------
# Reference: the model's own routing function (same signature as `zaya_router`), and the load counts.

router_reference = routing.route
expert_counts = moe.expert_counts


# ---------------------------------------------------------------------------------------------------------
# Kernel math on chunked activations (lists of [block_t, width] tiles)

# XLA's fp32 erfc (the Cephes polynomials of chlo's erfc decomposition): Triton has no erf/erfc, and using
# the same polynomials keeps the kernel's GELU equal to jax.nn.gelu's.
_ERF_T = (7.853861353153693e-5, -8.010193625184903e-4, 5.188327685732524e-3, -2.685381193529856e-2,
          1.128358514861418e-1, -3.761262582423300e-1, 1.128379165726710e+0)
_ERFC_P = (2.326819970068386e-2, -1.387039388740657e-1, 3.687424674597105e-1, -5.824733027278666e-1,
           6.210004621745983e-1, -4.944515323274145e-1, 3.404879937665872e-1, -2.741127028184656e-1,
           5.638259427386472e-1)
_ERFC_R = (-1.047766399936249e+1, 1.297719955372516e+1, -7.495518717768503e+0, 2.921019019210786e+0,
           -1.015265279202700e+0, 4.218463358204948e-1, -2.820767439740514e-1, 5.641895067754075e-1)
_MAXLOG = 88.72283905206835


def _polynomial(x, coefficients):
  """Horner evaluation, highest degree first."""
  p = jnp.full_like(x, coefficients[0])
  for c in coefficients[1:]:
    p = p * x + np.float32(c)
  return p


def erfc_f32(x):
  """erfc of an fp32 array from exp and arithmetic only (lowers to Triton), matching XLA's lax.erfc."""
  x_sq = x * x
  abs_x = jnp.abs(x)
  near = 1.0 - x * _polynomial(x_sq, _ERF_T)
  inv_x_sq = 1.0 / x_sq
  tail_poly = jnp.where(abs_x < 2.0, _polynomial(inv_x_sq, _ERFC_P), _polynomial(inv_x_sq, _ERFC_R))
  tail = jnp.exp(-x_sq) * (1.0 / abs_x) * tail_poly
  tail = jnp.where(-x_sq < -_MAXLOG, 0.0, tail)
  tail = jnp.where(x < 0, 2.0 - tail, tail)
  return jnp.where(abs_x < 1.0, near, tail)


def _gelu(x):
  """jax.nn.gelu(x, approximate=False) = 0.5 x erfc(-x/sqrt2), with the same roundings to x.dtype."""
  dt = x.dtype
  arg = (-x * np.sqrt(0.5).astype(dt)).astype(F32)
  return (0.5 * x) * erfc_f32(arg).astype(dt)


def _vector(ref, start: int, size: int, dt):
  """ref[start:start+size] as a [1, size] row in dt."""
  return load(ref.at[pl.ds(start, size)]).astype(dt)[None, :]


def _down_projection(x_ref, w_ref, t0, cfg):
  """x[t0:t0+bt] @ W_down in fp32 -> R/block_r chunks [bt, br]; loops over D in block_d steps."""
  bt, bd, br = cfg.block_t, cfg.block_d, cfg.block_r
  (N, D), R = x_ref.shape, w_ref.shape[1]
  dt = x_ref.dtype
  t_mask = edge_mask(t0, bt, N)
  r_starts = range(0, R, br)

  def d_step(i, accs):
    d0 = i * bd
    d_mask = edge_mask(d0, bd, D)
    x = load(x_ref.at[pl.ds(t0, bt), pl.ds(d0, bd)], tile_mask(t_mask, d_mask))
    out = []
    for acc, r0 in zip(accs, r_starts):
      w = load(w_ref.at[pl.ds(d0, bd), pl.ds(r0, br)], tile_mask(d_mask, None)).astype(dt)
      out.append(acc + jnp.dot(x, w, preferred_element_type=F32))
    return tuple(out)

  accs = tuple(jnp.zeros((bt, br), F32) for _ in r_starts)
  return list(lax.fori_loop(0, pl.cdiv(D, bd), d_step, accs))


def _chunked_linear(chunks, w_ref, b_ref, out_block: int, dt):
  """L.linear over chunked inputs: sum_j chunk_j @ W[j-th rows] (+ b), fp32 accumulation, rounded to dt.

  chunks: list of [bt, br] in dt covering W's rows; -> list of [bt, out_block] covering W's columns (whose
  count is a multiple of out_block).
  """
  R_in, R_out = w_ref.shape
  br = chunks[0].shape[1]
  outs = []
  for o0 in range(0, R_out, out_block):
    acc = jnp.zeros((chunks[0].shape[0], out_block), F32)
    for chunk, i0 in zip(chunks, range(0, R_in, br)):
      w = load(w_ref.at[pl.ds(i0, br), pl.ds(o0, out_block)])
      acc = acc + jnp.dot(chunk, w.astype(dt), preferred_element_type=F32)
    if b_ref is not None:
      acc = acc + _vector(b_ref, o0, out_block, dt).astype(F32)
    outs.append(acc.astype(dt))
  return outs


def _rms_norm(chunks, weight_ref, width: int, eps: float):
  """L.rms_norm over chunked [bt, br] inputs: the first `width` columns are the vector, the rest zero."""
  dt = chunks[0].dtype
  br = chunks[0].shape[1]
  x32 = [c.astype(F32) for c in chunks]
  sum_sq = sum(jnp.sum(c * c, axis=1, keepdims=True) for c in x32)
  inv_rms = lax.rsqrt(sum_sq / width + eps)
  return [_vector(weight_ref, i * br, br, dt) * (c * inv_rms).astype(dt) for i, c in enumerate(x32)]


def _route(logits, beta_ref, num_classes: int):
  """Softmax over the first num_classes columns of logits [bt, bc], biased argmax -> (choice [bt], weight [bt])."""
  dt = logits.dtype
  classes = jnp.arange(logits.shape[1])[None, :]
  valid = classes < num_classes
  z = jnp.where(valid, logits.astype(F32), -jnp.inf)
  e = jnp.exp(z - jnp.max(z, axis=1, keepdims=True))
  probs = (e / jnp.sum(e, axis=1, keepdims=True)).astype(dt)
  beta = _vector(beta_ref, 0, logits.shape[1], F32)
  choice = jnp.argmax(jnp.where(valid, probs.astype(F32) + beta, -jnp.inf), axis=1).astype(I32)
  weight = jnp.sum(jnp.where(classes == choice[:, None], probs.astype(F32), 0.0), axis=1)
  return choice, weight.astype(dt)


# ---------------------------------------------------------------------------------------------------------
# Kernel and public API


class RouterConfig(NamedTuple):
  """Static parameters of one fused router call (hashable: a nondiff argument of the custom VJP)."""
  width: int        # R before padding
  num_classes: int  # C before padding
  eps: float
  use_eda: bool
  block_t: int
  block_d: int
  block_r: int
  num_warps: int
  num_stages: int
  interpret: bool


_WEIGHTS = ("down_proj_kernel", "down_proj_bias", "norm_weight", "fc1_kernel", "fc1_bias", "fc2_kernel",
            "fc2_bias", "out_proj_kernel", "balancing_biases")


def _router_kernel(*refs, cfg: RouterConfig):
  """Routes block_t tokens: refs = x, [carry, eda scale,] *_WEIGHTS, then the 4 outputs (R and C padded)."""
  x_ref, *refs = refs
  if cfg.use_eda:
    carry_ref, eda_ref, *refs = refs
  w = dict(zip(_WEIGHTS, refs))
  choice_ref, weight_ref, logits_ref, carry_out_ref = refs[len(_WEIGHTS):]
  dt = x_ref.dtype
  N, R, block_c = x_ref.shape[0], carry_out_ref.shape[1], logits_ref.shape[1]
  bt, br = cfg.block_t, cfg.block_r
  t0 = pl.program_id(0) * bt
  t_mask = edge_mask(t0, bt, N)
  r_starts = list(range(0, R, br))

  h = _down_projection(x_ref, w["down_proj_kernel"], t0, cfg)
  h = [(acc + _vector(w["down_proj_bias"], r0, br, dt).astype(F32)).astype(dt) for acc, r0 in zip(h, r_starts)]
  if cfg.use_eda:
    h = [hj + load(carry_ref.at[pl.ds(t0, bt), pl.ds(r0, br)], tile_mask(t_mask, None)).astype(dt)
         * _vector(eda_ref, r0, br, dt) for hj, r0 in zip(h, r_starts)]
  for hj, r0 in zip(h, r_starts):
    store(carry_out_ref.at[pl.ds(t0, bt), pl.ds(r0, br)], hj, tile_mask(t_mask, None))

  n = _rms_norm(h, w["norm_weight"], cfg.width, cfg.eps)
  g = [_gelu(c) for c in _chunked_linear(n, w["fc1_kernel"], w["fc1_bias"], br, dt)]
  g = [_gelu(c) for c in _chunked_linear(g, w["fc2_kernel"], w["fc2_bias"], br, dt)]
  [logits] = _chunked_linear(g, w["out_proj_kernel"], None, block_c, dt)
  store(logits_ref.at[pl.ds(t0, bt), pl.ds(0, block_c)], logits, tile_mask(t_mask, None))

  choice, weight = _route(logits, w["balancing_biases"], cfg.num_classes)
  store(choice_ref.at[pl.ds(t0, bt)], choice, t_mask)
  store(weight_ref.at[pl.ds(t0, bt)], weight, t_mask)


def _pad_to(a, shape):
  """Zero-pad `a` at the end of each axis up to `shape` (a no-op when it has that shape already)."""
  if a.shape == tuple(shape):
    return a
  return jnp.pad(a, [(0, s - d) for d, s in zip(a.shape, shape)])


def _router_call(cfg: RouterConfig, x_ND, carry_NR, params):
  """The router pallas_call on weights padded to Rp = whole block_r chunks and Cp = a power-of-two class tile."""
  N, D = x_ND.shape
  R, C = cfg.width, cfg.num_classes
  Rp, Cp = pl.cdiv(R, cfg.block_r) * cfg.block_r, max(16, pl.next_power_of_2(C))
  dt = x_ND.dtype
  weights = dict(params, norm_weight=params["norm"]["weight"])
  padded_shapes = {"down_proj_kernel": (D, Rp), "down_proj_bias": (Rp,), "norm_weight": (Rp,),
                   "fc1_kernel": (Rp, Rp), "fc1_bias": (Rp,), "fc2_kernel": (Rp, Rp), "fc2_bias": (Rp,),
                   "out_proj_kernel": (Rp, Cp), "balancing_biases": (Cp,)}
  inputs = [x_ND]
  if cfg.use_eda:
    inputs += [_pad_to(carry_NR, (N, Rp)), _pad_to(params["router_states_scale"], (Rp,))]
  inputs += [_pad_to(weights[name], padded_shapes[name]) for name in _WEIGHTS]
  out_shape = (jax.ShapeDtypeStruct((N,), I32), jax.ShapeDtypeStruct((N,), dt),
               jax.ShapeDtypeStruct((N, Cp), dt), jax.ShapeDtypeStruct((N, Rp), dt))
  choice, weight, logits, next_carry = pl.pallas_call(
      functools.partial(_router_kernel, cfg=cfg),
      out_shape=out_shape,
      grid=(pl.cdiv(N, cfg.block_t),),
      compiler_params=triton_params(cfg.num_warps, cfg.num_stages),
      interpret=cfg.interpret,
      name="zaya_router",
  )(*inputs)
  return choice, weight, logits[:, :C], next_carry[:, :R]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _router(cfg, x_ND, carry_NR, params):
  return _router_call(cfg, x_ND, carry_NR, params)


def _router_fwd(cfg, x_ND, carry_NR, params):
  return _router_call(cfg, x_ND, carry_NR, params), (x_ND, carry_NR, params)


def _router_bwd(cfg, residuals, cotangents):
  _, d_weight, d_logits, d_carry = cotangents  # the integer choice has no cotangent

  def float_outputs(x_ND, carry_NR, params):
    return router_reference(x_ND, carry_NR, params, eps=cfg.eps, use_eda=cfg.use_eda)[1:]

  _, vjp = jax.vjp(float_outputs, *residuals)
  return vjp((d_weight, d_logits, d_carry))


_router.defvjp(_router_fwd, _router_bwd)


def zaya_router(x_ND, carry_NR, params, *, eps: float, use_eda: bool, block_t=64, block_d=64, block_r=64,
                num_warps=4, num_stages=2, interpret=None):
  """Fused Pallas router, same contract as `router_reference` (see there), differentiable like it.

  Tiles: block_t tokens per program (odd N is masked), block_d columns of x per down-projection step, block_r
  router columns per chunk (capped at R rounded up to a power of two); all powers of two >= 16.
  `interpret=None` interprets on CPU only.
  """
  for name, size in (("block_t", block_t), ("block_d", block_d), ("block_r", block_r)):
    check_block(name, size)
  R, C = params["out_proj_kernel"].shape
  block_r = min(block_r, max(16, pl.next_power_of_2(R)))  # a narrow router is one chunk, not mostly padding
  cfg = RouterConfig(R, C, float(eps), bool(use_eda), block_t, block_d, block_r, num_warps, num_stages,
                     resolve_interpret(interpret))
  keys = ("down_proj_kernel", "down_proj_bias", "norm", "fc1_kernel", "fc1_bias", "fc2_kernel", "fc2_bias",
          "out_proj_kernel", "balancing_biases") + (("router_states_scale",) if use_eda else ())
  return _router(cfg, x_ND, carry_NR if use_eda else None, {k: params[k] for k in keys})
