"""Expert dispatch for the top-1 ZAYA MoE: index math, permutation with gather-only gradients, grouped matmuls.

A dispatch *plan* puts the routed tokens (skip-route tokens excluded) into expert-contiguous order inside a
buffer whose groups are padded to a multiple of `block_size` rows, so that every block of rows belongs to a
single expert. `block_size=1` gives the unpadded ragged layout that `jax.lax.ragged_dot` and the Pallas `gmm`
take. Both directions between tokens and buffer rows are gathers (`gather_rows`, `combine_rows`), and so are
their gradients: the map is a bijection between routed tokens and the buffer's valid rows.

Implementations behind `expert_ffn` (the config's `moe_impl`):
  reference   every expert on every token, each token keeps its own (E x the FLOPs; simple and exact)
  gather      each token's own expert weights gathered and applied as a batched matvec (one expert's weights
              copied per token: the fast path for a few tokens, e.g. decoding; N x the weights in memory)
  blocked     sorted tokens, block-padded groups, one dense [block, D] x [D, F] matmul per block, empty groups
              skipped (CPU fast path; see `effective_block_size`)
  ragged_dot  sorted tokens, `jax.lax.ragged_dot` (on CPU it computes every expert for every row: slow)
  pallas      sorted tokens, the Triton-path Pallas grouped matmul (GPU; interpret mode on CPU)
  auto        gather for at most num_experts tokens per call (decoding), else pallas on GPU, blocked on CPU
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from zaya_jax import layers as L
from zaya_jax.config import MOE_IMPLS


class DispatchPlan(NamedTuple):
  """Index arrays that route N tokens into an [R, D] expert-sorted buffer (R = buffer_rows(N, E, block))."""
  counts: jax.Array  # [E] routed tokens per expert (skip route excluded)
  group_sizes: jax.Array  # [E] rows per expert in the buffer (counts rounded up to the block size)
  gather_rows: jax.Array  # [R] token feeding each buffer row; N (a zero row) for padding
  combine_rows: jax.Array  # [N] buffer row holding each token's output; R (a zero row) for skip tokens


def buffer_rows(num_tokens: int, num_experts: int, block_size: int) -> int:
  """Static buffer length: enough for any routing once each group is padded to the block size."""
  if block_size == 1:
    return num_tokens
  return (cdiv(num_tokens, block_size) + num_experts) * block_size


def cdiv(a, b):
  """Ceiling division (ints or integer arrays)."""
  return -(-a // b)


def expert_counts(choice_N, num_classes: int):
  """Tokens per router class -> [num_classes] int32 (the last class is the skip route)."""
  return jnp.zeros((num_classes,), jnp.int32).at[choice_N].add(1)


def dispatch_plan(choice_N, num_experts: int, block_size: int = 1) -> DispatchPlan:
  """Plans the expert-sorted, block-padded buffer for top-1 choices in [0, num_experts] (num_experts = skip)."""
  N = choice_N.shape[0]
  R = buffer_rows(N, num_experts, block_size)
  counts = expert_counts(choice_N, num_experts + 1)[:num_experts]
  group_sizes = cdiv(counts, block_size) * block_size
  group_start = jnp.cumsum(group_sizes) - group_sizes  # [E] first buffer row of each group
  # Stable sort: tokens keep their order within an expert; skip tokens (class E) sort last.
  order = jnp.argsort(choice_N, stable=True)
  sorted_choice = choice_N[order]
  rank = jnp.arange(N) - (jnp.cumsum(counts) - counts)[jnp.minimum(sorted_choice, num_experts - 1)]
  routed = sorted_choice < num_experts
  row_of_sorted = jnp.where(routed, group_start[jnp.minimum(sorted_choice, num_experts - 1)] + rank, R)
  combine_rows = jnp.zeros((N,), jnp.int32).at[order].set(row_of_sorted.astype(jnp.int32))
  gather_rows = jnp.full((R + 1,), N, jnp.int32).at[row_of_sorted].set(order.astype(jnp.int32))[:R]
  return DispatchPlan(counts, group_sizes.astype(jnp.int32), gather_rows, combine_rows)


def take_rows(x, rows):
  """x[rows] with one extra zero row addressable as index len(x)."""
  padded = jnp.concatenate([x, jnp.zeros((1,) + x.shape[1:], x.dtype)], axis=0)
  return jnp.take(padded, rows, axis=0)


@jax.custom_vjp
def permute(x_ND, gather_rows_R, combine_rows_N):
  """Tokens -> expert-sorted buffer [R, D] (padding rows zero)."""
  return take_rows(x_ND, gather_rows_R)


def _permute_fwd(x, gather_rows, combine_rows):
  return permute(x, gather_rows, combine_rows), (gather_rows, combine_rows)


def _permute_bwd(res, dy_RD):
  gather_rows, combine_rows = res
  return take_rows(dy_RD, combine_rows), None, None


permute.defvjp(_permute_fwd, _permute_bwd)


@jax.custom_vjp
def unpermute(y_RD, weight_N, gather_rows_R, combine_rows_N):
  """Expert-sorted outputs -> token order, scaled by the combine weight (skip tokens get zeros) -> [N, D]."""
  return take_rows(y_RD, combine_rows_N) * weight_N[:, None].astype(y_RD.dtype)


def _unpermute_fwd(y, weight, gather_rows, combine_rows):
  return unpermute(y, weight, gather_rows, combine_rows), (y, weight, gather_rows, combine_rows)


def _unpermute_bwd(res, dout_ND):
  y, weight, gather_rows, combine_rows = res
  dy = take_rows(dout_ND * weight[:, None].astype(dout_ND.dtype), gather_rows)
  per_token = take_rows(y, combine_rows)
  dweight = jnp.sum(dout_ND.astype(jnp.float32) * per_token.astype(jnp.float32), axis=-1).astype(weight.dtype)
  return dy, dweight, None, None


unpermute.defvjp(_unpermute_fwd, _unpermute_bwd)


# Blocked grouped matmul (CPU fast path) ------------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def blocked_gmm(lhs_RK, rhs_GKN, group_sizes_G, block_size: int):
  """Grouped matmul over block-padded groups: rows of group g (group_sizes[g], a multiple of block_size,
  groups contiguous from row 0) times rhs[g]; rows past the groups are zeros. -> [R, N] in lhs dtype.

  Loops over groups (rhs[g] sliced once) and, inside, over that group's blocks with one dense
  [block, K] x [K, N] matmul each; the trip counts are data-dependent, so padding costs nothing.
  """
  return _blocked_matmul(lhs_RK, rhs_GKN, group_sizes_G, block_size)


def _group_blocks(group_sizes, block_size):
  """First block and number of blocks of each group."""
  n_blocks = group_sizes // block_size
  return jnp.cumsum(n_blocks) - n_blocks, n_blocks


def _for_each_block(group_sizes, block_size, group_init, block_body, group_done, carry):
  """for non-empty g: state = group_init(g); for blocks b of g: state = block_body(b, state); carry =
  group_done(g, ..). Empty groups are skipped: with few tokens (decoding) most are, and group_init's slice of
  the expert weights is a copy."""
  first, count = _group_blocks(group_sizes, block_size)
  used = jnp.argsort(count == 0, stable=True)  # the non-empty groups first, in order

  def per_group(i, carry):
    g = used[i]
    state = jax.lax.fori_loop(first[g], first[g] + count[g], lambda b, st: block_body(g, b, st), group_init(g, carry))
    return group_done(g, state, carry)

  return jax.lax.fori_loop(0, jnp.sum(count > 0), per_group, carry)


def _blocked_matmul(lhs, rhs, group_sizes, block_size):
  out = jnp.zeros((lhs.shape[0], rhs.shape[2]), lhs.dtype)

  def group_init(g, out):
    return jax.lax.dynamic_index_in_dim(rhs, g, keepdims=False).astype(lhs.dtype), out

  def block_body(g, b, state):
    w, out = state
    rows = jax.lax.dynamic_slice_in_dim(lhs, b * block_size, block_size)
    y = jnp.dot(rows, w, preferred_element_type=jnp.float32).astype(lhs.dtype)
    return w, jax.lax.dynamic_update_slice_in_dim(out, y, b * block_size, axis=0)

  return _for_each_block(group_sizes, block_size, group_init, block_body, lambda g, st, _: st[1], out)


def _blocked_gmm_fwd(lhs, rhs, group_sizes, block_size):
  return _blocked_matmul(lhs, rhs, group_sizes, block_size), (lhs, rhs, group_sizes)


def _blocked_gmm_bwd(block_size, res, dout_RN):
  lhs, rhs, group_sizes = res
  dlhs = _blocked_matmul(dout_RN.astype(lhs.dtype), jnp.swapaxes(rhs, 1, 2), group_sizes, block_size)

  def group_init(g, drhs):
    return jnp.zeros(rhs.shape[1:], jnp.float32)

  def block_body(g, b, acc):
    rows = jax.lax.dynamic_slice_in_dim(lhs, b * block_size, block_size)
    d = jax.lax.dynamic_slice_in_dim(dout_RN, b * block_size, block_size).astype(lhs.dtype)
    return acc + jnp.dot(rows.T, d, preferred_element_type=jnp.float32)

  def group_done(g, acc, drhs):
    return jax.lax.dynamic_update_index_in_dim(drhs, acc.astype(rhs.dtype), g, axis=0)

  drhs = _for_each_block(group_sizes, block_size, group_init, block_body, group_done, jnp.zeros_like(rhs))
  return dlhs, drhs, None


blocked_gmm.defvjp(_blocked_gmm_fwd, _blocked_gmm_bwd)


# The expert FFN under each implementation -----------------------------------------------------------------------

def resolve_impl(moe_impl: str, num_tokens: int | None = None, num_experts: int | None = None) -> str:
  """'auto' -> 'gather' when a call has at most as many tokens as there are experts (both given), else 'pallas'
  on GPU backends and 'blocked' elsewhere; any other name is returned as is.

  Gathering copies one expert's weights per token. Inside the model's layer scan the blocked loop first copies
  the layer's whole expert stack (the loop cannot fuse the scan's slice of the stacked weights), so gathering
  wins up to E tokens. Measured decoding configs/bench_small.py (16 experts) on 2 CPU cores, per step: batch 8
  4.4-4.7 ms gathering vs 6.6-7.3 ms blocked, batch 16 7.8-8.0 vs 9.1-11.1 ms.
  """
  if moe_impl not in MOE_IMPLS:
    raise ValueError(f"moe_impl must be one of {MOE_IMPLS}, got {moe_impl!r}")
  if moe_impl == "auto":
    if num_tokens is not None and num_experts is not None and num_tokens <= num_experts:
      return "gather"
    return "pallas" if jax.default_backend() in ("gpu", "cuda", "rocm") else "blocked"
  return moe_impl


def _swiglu(h, inter):
  return jax.nn.silu(h[..., :inter]) * h[..., inter:]


def reference_ffn(x_ND, choice_N, weight_N, gate_up_EDF, down_EID):
  """Every expert over all tokens, each token keeps its own expert's output (skip route: zeros)."""
  E, inter = gate_up_EDF.shape[0], down_EID.shape[1]
  dt = x_ND.dtype
  weighted = jnp.where(choice_N < E, weight_N, jnp.zeros_like(weight_N))

  def one_expert(acc, inputs):
    e, w_gu, w_d = inputs
    out = L.linear(_swiglu(L.linear(x_ND, w_gu, dt=dt), inter), w_d, dt=dt) * weighted[:, None]
    return jnp.where((choice_N == e)[:, None], out, acc), None

  out, _ = jax.lax.scan(one_expert, jnp.zeros_like(x_ND), (jnp.arange(E), gate_up_EDF, down_EID))
  return out


def effective_block_size(num_tokens: int, block_size: int, num_experts: int) -> int:
  """The blocked dispatch's rows per block: block_size, but no larger than a quarter of the mean group
  (num_tokens / num_experts) rounded up to a power of two, since every group is padded to whole blocks.
  Measured on 2 CPU cores (16 experts of 256 x 256), forward: 256 tokens 2.4 ms with blocks of 4-8 rows vs
  11.2 ms with 128, 1024 tokens 6.9-7.3 ms (4-16) vs 11.8 ms; forward + backward at 1024 tokens 28-31 ms
  (16-64) vs 42 ms; at 4096 (fwd + bwd) and 10560 tokens (fwd) sizes 16-128 are within noise."""
  return min(block_size, 1 << max(0, (cdiv(num_tokens, 4 * num_experts) - 1).bit_length()))


def gather_ffn(x_ND, choice_N, weight_N, gate_up_EDF, down_EID):
  """Each token's own expert weights ([N, D, 2I] and [N, I, D], gathered) applied as a batched matvec."""
  E, inter = gate_up_EDF.shape[0], down_EID.shape[1]
  dt = x_ND.dtype
  routed = choice_N < E
  # The skip route's index E is out of range: its rows are filled with zeros instead of read.
  gather = lambda w: jnp.take(w, choice_N, axis=0, mode="fill", fill_value=0).astype(dt)
  w_gu, w_d = gather(gate_up_EDF), gather(down_EID)
  h = jnp.einsum("nd,ndf->nf", x_ND, w_gu, preferred_element_type=jnp.float32).astype(dt)
  y = jnp.einsum("ni,nid->nd", _swiglu(h, inter), w_d, preferred_element_type=jnp.float32).astype(dt)
  return jnp.where(routed[:, None], y * weight_N[:, None].astype(dt), jnp.zeros_like(y))


def expert_ffn(x_ND, choice_N, weight_N, gate_up_EDF, down_EID, *, moe_impl: str, block_size: int):
  """Top-1 SwiGLU MoE output [N, D]: weight * expert(x) for routed tokens, zeros for the skip route.

  gate_up [E, D, 2I] (gate columns first), down [E, I, D]. All implementations compute the same function.
  """
  impl = resolve_impl(moe_impl, x_ND.shape[0], gate_up_EDF.shape[0])
  block_size = effective_block_size(x_ND.shape[0], block_size, gate_up_EDF.shape[0])
  if impl == "reference":
    return reference_ffn(x_ND, choice_N, weight_N, gate_up_EDF, down_EID)
  if impl == "gather":
    return gather_ffn(x_ND, choice_N, weight_N, gate_up_EDF, down_EID)
  E, inter = gate_up_EDF.shape[0], down_EID.shape[1]
  dt = x_ND.dtype
  plan = dispatch_plan(choice_N, E, block_size if impl == "blocked" else 1)
  xs = permute(x_ND, plan.gather_rows, plan.combine_rows)
  w_gu, w_d = gate_up_EDF.astype(dt), down_EID.astype(dt)
  if impl == "blocked":
    matmul = lambda lhs, rhs: blocked_gmm(lhs, rhs, plan.group_sizes, block_size)
  elif impl == "ragged_dot":
    matmul = lambda lhs, rhs: jax.lax.ragged_dot(lhs, rhs, plan.group_sizes,
                                                  preferred_element_type=jnp.float32).astype(lhs.dtype)
  else:
    from pallas_kernels import gmm as pallas_gmm  # imported lazily: the kernels are only needed on this path
    matmul = lambda lhs, rhs: pallas_gmm.gmm(lhs, rhs, plan.group_sizes)
  h = matmul(xs, w_gu)
  ys = matmul(_swiglu(h, inter), w_d)
  weight = jnp.where(choice_N < E, weight_N, jnp.zeros_like(weight_N))
  return unpermute(ys, weight, plan.gather_rows, plan.combine_rows)
