"""Pure functions the ZAYA1 modules are built from: linear maps, RMSNorm, RoPE, masks, attention, CCA convs.

Numerics follow transformers' `ZayaForCausalLM` (see ZAYA1.md §3 and §8): matmuls accumulate in fp32 and round
once to the activation dtype `dt`; norms compute statistics in fp32 and round before the weight multiply.
Shape suffixes: B batch, S new tokens, T key slots, H query heads, K kv heads, G = H // K, D model width,
C conv channels, P conv context, E experts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32


def linear(x, kernel, bias=None, dt=None):
  """y = x @ kernel (+ bias), fp32 accumulation, rounded to `dt` (default: x.dtype). kernel: [in, out]."""
  dt = dt or x.dtype
  y = jnp.einsum("...i,io->...o", x.astype(dt), kernel.astype(dt), preferred_element_type=F32)
  if bias is not None:
    y = y + bias.astype(dt).astype(F32)
  return y.astype(dt)


def rms_norm(x, weight, eps):
  """transformers' ZayaRMSNorm: statistics in fp32, normalised value rounded to x.dtype, then times weight."""
  dt = x.dtype
  x32 = x.astype(F32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return weight.astype(dt) * normed.astype(dt)


def l2_normalize(x, scale):
  """x * scale / max(||x||, eps(dtype)) over the last axis, the division done in x.dtype (ZayaQKNorm)."""
  dt = x.dtype
  norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(F32)), axis=-1, keepdims=True)).astype(dt)
  norm = jnp.maximum(norm, jnp.asarray(jnp.finfo(dt).eps, dt))
  return x * (jnp.asarray(scale, dt) / norm)


def rope_inv_freq(theta: float, rotary_dim: int):
  """Default RoPE inverse frequencies theta^(-2i/rotary_dim), i < rotary_dim/2. -> [rotary_dim // 2] fp32."""
  return 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=F32) / rotary_dim))


def apply_rope(x_BSNd, positions_BS, inv_freq, dt):
  """Partial NeoX RoPE on the first 2*len(inv_freq) dims; cos/sin computed in fp32 and rounded to dt."""
  freqs = positions_BS[..., None].astype(F32) * inv_freq  # [B,S,R/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  cos = jnp.cos(emb).astype(dt)[:, :, None, :]
  sin = jnp.sin(emb).astype(dt)[:, :, None, :]
  rot = emb.shape[-1]
  x_rot, x_pass = x_BSNd[..., :rot], x_BSNd[..., rot:]
  half = rot // 2
  rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
  return jnp.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)


def attention_mask(q_slot_BS, k_slot_T, key_valid_BT, window, q_segment_BS=None, k_segment_BT=None):
  """Which keys each query may see -> bool [B,S,T].

  Causal over cache slots, padding keys hidden, `window` > 0 keeps keys with q_slot - k_slot < window (the
  current token counts), and with segment ids only keys of the same document are visible.
  """
  q = q_slot_BS[:, :, None]
  k = k_slot_T[None, None, :]
  allowed = (k <= q) & key_valid_BT[:, None, :]
  allowed &= (window <= 0) | (q - k < window)
  if q_segment_BS is not None:
    allowed &= q_segment_BS[:, :, None] == k_segment_BT[:, None, :]
  return allowed


def attend(q_BSHd, k_BKTd, v_BKTd, mask_BST, scale):
  """Grouped-query softmax attention (fp32 scores and softmax, like transformers' eager path) -> [B,S,H*d].

  Keys and values are kv-head major [B,K,T,d]. Query head h reads kv head h // G. Rows with no visible key
  (padding queries) get a uniform softmax instead of NaN; their outputs are never used.
  """
  B, S, H, d = q_BSHd.shape
  K = k_BKTd.shape[1]
  dt = q_BSHd.dtype
  q = q_BSHd.reshape(B, S, K, H // K, d)
  scores = jnp.einsum("bskgd,bktd->bkgst", q, k_BKTd, preferred_element_type=F32) * scale
  scores = jnp.where(mask_BST[:, None, None], scores, jnp.finfo(F32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(dt)
  # Head-major output, transposed afterwards: with the transpose inside the einsum XLA:CPU swaps the operands
  # into a transposed-operand matmul that is several times slower at decode shapes.
  out = jnp.einsum("bkgst,bktd->bkgsd", probs, v_BKTd, preferred_element_type=F32).astype(dt)
  return out.transpose(0, 3, 1, 2, 4).reshape(B, S, H * d)


def causal_block_attend(q_BSHd, k_BKSd, v_BKSd, mask_BSS, scale, block: int):
  """`attend` over a call's own keys in blocks of `block` query rows, each reading only the keys up to its last
  row: about half the work of one [S, S] block, and each block's scores stay small. -> [B,S,H*d].

  mask_BSS must be causal (key s' > query s never visible), so the skipped keys are all masked. Same function
  as `attend` for every row with a visible key (rows without one, padding queries, stay unused garbage).
  """
  S = q_BSHd.shape[1]
  outs = []
  for start in range(0, S, block):
    end = min(start + block, S)
    outs.append(attend(q_BSHd[:, start:end], k_BKSd[:, :, :end], v_BKSd[:, :, :end], mask_BSS[:, start:end, :end],
                       scale))
  return jnp.concatenate(outs, axis=1)


def shifted_history(x_BSC, history_BPC, segment_BS=None):
  """[x_{t-d} for d = 0..P] -> [P+1, B, S, C], reading x_{<0} from `history` (the last P inputs, oldest first).

  With segment ids, x_{t-d} from another document is zero, so each packed document sees a fresh start.
  """
  P = history_BPC.shape[1]
  S = x_BSC.shape[1]
  padded = jnp.concatenate([history_BPC.astype(x_BSC.dtype), x_BSC], axis=1)
  shifts = []
  for d in range(P + 1):
    x_d = padded[:, P - d:P - d + S]
    if segment_BS is not None and d:
      same = jnp.pad(segment_BS[:, :-d], ((0, 0), (d, 0)), constant_values=-1) == segment_BS
      x_d = jnp.where(same[..., None], x_d, 0)
    shifts.append(x_d)
  return jnp.stack(shifts)


def cca_conv(shifts_DBSC, dw_kernel_KC, dw_bias_C, grp_kernel_KjC, grp_bias_C, head_dim):
  """CCA's two stacked causal convolutions (depthwise, then one group per head) -> [B,S,C].

  Equals padding the raw q/k sequence with P = (K0-1)+(K1-1) zeros (or cached inputs) and running both PyTorch
  Conv1d layers unpadded: the depthwise output for a position before the sequence start is its bias, not zero.
  Kernel tap k multiplies the input k - (K-1) steps back (cross-correlation, no flip).
  """
  dt = shifts_DBSC.dtype
  K0 = dw_kernel_KC.shape[0]
  K1 = grp_kernel_KjC.shape[0]
  _, B, S, C = shifts_DBSC.shape
  n_groups = C // head_dim
  w_grp = grp_kernel_KjC.astype(dt).reshape(K1, head_dim, n_groups, head_dim)  # [K1, in j, group, out o]
  z = grp_bias_C.astype(dt).astype(F32)
  for s1 in range(K1):  # depthwise output y_{t - s1}
    y = dw_bias_C.astype(dt).astype(F32)
    for s0 in range(K0):
      y = y + shifts_DBSC[s1 + s0].astype(F32) * dw_kernel_KC[K0 - 1 - s0].astype(dt).astype(F32)
    y = y.astype(dt).reshape(B, S, n_groups, head_dim)
    z = z + jnp.einsum("bsgj,jgo->bsgo", y, w_grp[K1 - 1 - s1], preferred_element_type=F32).reshape(B, S, C)
  return z.astype(dt)
