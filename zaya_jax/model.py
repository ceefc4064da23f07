"""The ZAYA1 decoder as Flax linen modules, scanned over layers.

Parameter tree (mirrors the transformers names; kernels are [in, out]):
  embed_tokens/embedding [V,D], input_hidden_states_{scale,bias} [D], norm/weight [D],
  layer_0/...   block 0 (its router has no EDA scale),
  layers/...    blocks 1..L-1 stacked on a leading axis (nn.scan).
Each block: input_layernorm, self_attn (CCA), post_attention_residual_scale, post_attention_layernorm,
mlp (gate = router, experts), post_mlp_residual_scale. The router's `balancing_biases` live in the parameter
tree so a checkpoint is one pytree, but no gradient reaches them (they are updated by the balancing rule).

The functional entry points (`forward`, `prefill`, `decode_step`) live in `zaya_jax.api`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zaya_jax import layers as L
from zaya_jax import expert_parallel, moe, routing
from zaya_jax.config import ZayaConfig

F32 = jnp.float32
# Query rows per block of a prefill's causal block attention (L.causal_block_attend).
PREFILL_ATTENTION_BLOCK = 64


def _param(module, name, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _skip_bias_init(key, shape, dtype):
  del key
  return jnp.zeros(shape, dtype).at[-1].set(-1.0)


class RMSNorm(nn.Module):
  eps: float
  param_dtype: Any = F32
  axis_name: str = "norm"

  @nn.compact
  def __call__(self, x):
    weight = _param(self, "weight", nn.initializers.ones, (x.shape[-1],), (self.axis_name,), self.param_dtype)
    return L.rms_norm(x, weight, self.eps)


class ResidualScaling(nn.Module):
  """(h + b_h) * s_h + (r + b_r) * s_r: the mixer part in the activation dtype, the residual part in fp32."""
  param_dtype: Any = F32

  @nn.compact
  def __call__(self, h, r):
    D = h.shape[-1]
    p = {name: _param(self, name, init, (D,), ("norm",), self.param_dtype)
         for name, init in (("hidden_states_scale", nn.initializers.ones),
                            ("hidden_states_bias", nn.initializers.zeros),
                            ("residual_scale", nn.initializers.ones),
                            ("residual_bias", nn.initializers.zeros))}
    dt = h.dtype
    h = (h + p["hidden_states_bias"].astype(dt)) * p["hidden_states_scale"].astype(dt)
    r = (r + p["residual_bias"].astype(dt).astype(F32)) * p["residual_scale"].astype(dt).astype(F32)
    return h.astype(F32) + r


def _read_layer(stacked, layer):
  """One layer of a decode-state entry stacked on a leading layer axis."""
  return jax.lax.dynamic_index_in_dim(stacked, layer, keepdims=False)


def _write_layer(stacked, update, layer, *start):
  """stacked[layer, start:start + update.shape] = update. The stacked state travels through the layer scan as
  its carry, so this is a small in-place write (scanning over it would copy every layer's cache in and out)."""
  return jax.lax.dynamic_update_slice(stacked, update[None].astype(stacked.dtype), (layer, *start))


class CCAttention(nn.Module):
  """Compressed Convolutional Attention (ZAYA1.md §3.4) with optional cache continuation.

  cache: None, or the decode-state entries k/v/conv/delayed stacked on a leading layer axis (see
  `api.init_decode_state`), of which this block reads and writes layer `layer`.
  """
  config: ZayaConfig

  @nn.compact
  def __call__(self, x_BSD, ctx, layer_consts, cache, layer):
    cfg = self.config
    dt, pdt = cfg.compute_dtype, jnp.dtype(cfg.param_dtype)
    B, S, D = x_BSD.shape
    H, K, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    C, P = cfg.conv_channels, cfg.conv_context
    init = nn.initializers.normal(cfg.initializer_range)
    wq = _param(self, "q_proj", init, (D, H * d), ("embed", "q_heads"), pdt)
    wk = _param(self, "k_proj", init, (D, K * d), ("embed", "kv_heads"), pdt)
    wvc = _param(self, "v_proj_current", init, (D, K * d // 2), ("embed", "kv_heads"), pdt)
    wvd = _param(self, "v_proj_delayed", init, (D, K * d // 2), ("embed", "kv_heads"), pdt)
    dw_k = _param(self, "conv_qk_depthwise_kernel", init, (cfg.cca_time0, C), ("conv_time", "conv_channels"), pdt)
    dw_b = _param(self, "conv_qk_depthwise_bias", nn.initializers.zeros, (C,), ("conv_channels",), pdt)
    gr_k = _param(self, "conv_qk_grouped_kernel", init, (cfg.cca_time1, d, C),
                  ("conv_time", "head_dim", "conv_channels"), pdt)
    gr_b = _param(self, "conv_qk_grouped_bias", nn.initializers.zeros, (C,), ("conv_channels",), pdt)
    temp = _param(self, "temp", nn.initializers.zeros, (K,), ("norm",), pdt)
    wo = _param(self, "o_proj", init, (H * d, D), ("q_heads", "embed"), pdt)

    if ctx["conv_mask"] is not None:  # left padding: padding tokens enter the projections as exact zeros
      x_BSD = x_BSD * ctx["conv_mask"][..., None].astype(dt)
    q_raw = L.linear(x_BSD, wq, dt=dt)
    k_raw = L.linear(x_BSD, wk, dt=dt)

    # Mean path: q_res_h = (q_h + k_{g(h)}) / 2, k_res_j = mean of q_res over group j.
    q_res = (q_raw.reshape(B, S, K, H // K, d) + k_raw.reshape(B, S, K, 1, d)) * jnp.asarray(0.5, dt)
    k_res = jnp.mean(q_res, axis=3).astype(dt)
    q_res = q_res.reshape(B, S, H, d)

    # Conv path over [q_raw ; k_raw] with P inputs of history (zeros for a fresh sequence).
    qk_raw = jnp.concatenate([q_raw, k_raw], axis=-1)
    history = _read_layer(cache["conv"], layer) if cache is not None else jnp.zeros((B, P, C), dt)
    shifts = L.shifted_history(qk_raw, history, ctx["segment_ids"])
    z = L.cca_conv(shifts, dw_k, dw_b, gr_k, gr_b, d)
    q = z[..., :H * d].reshape(B, S, H, d) + q_res
    k = z[..., H * d:].reshape(B, S, K, d) + k_res

    q = L.l2_normalize(q, d ** 0.5)
    k = L.l2_normalize(k, d ** 0.5) * temp.astype(dt)[:, None]
    q = L.apply_rope(q, ctx["positions"], layer_consts["inv_freq"], dt)
    k = L.apply_rope(k, ctx["positions"], layer_consts["inv_freq"], dt)

    # Values: KV-head-major [current-token projection ; previous token's delayed projection].
    v_cur = L.linear(x_BSD, wvc, dt=dt)
    v_del = L.linear(x_BSD, wvd, dt=dt)
    prev = (_read_layer(cache["delayed"], layer)[:, None].astype(dt) if cache is not None
            else jnp.zeros((B, 1, K * d // 2), dt))
    v_prev = L.shifted_history(v_del, prev, ctx["segment_ids"])[1]
    v = jnp.concatenate([v_cur, v_prev], axis=-1).reshape(B, S, K, d)

    if cache is not None:
      conv_hist = jnp.concatenate([history.astype(dt), qk_raw], axis=1)[:, S:]  # the last P raw inputs
      cache = dict(cache, conv=_write_layer(cache["conv"], conv_hist, layer, 0, 0, 0),
                   delayed=_write_layer(cache["delayed"], v_del[:, -1], layer, 0, 0))
    out, cache = _cached_attention(q, k, v, ctx, layer_consts, cache, layer)
    return L.linear(out, wo, dt=dt), cache


def _cached_attention(q_BSHd, k_BSKd, v_BSKd, ctx, layer_consts, cache, layer):
  """Attention over this call's keys (no cache) or over the cache with them written at ctx["write_index"].

  A multi-token call into an empty cache (a prefill) attends to its own keys in causal query blocks (see
  `L.causal_block_attend`) instead of to the whole, mostly empty, buffer.
  Returns (attention output [B,S,H*d], the stacked cache with this layer's k/v written, or None).
  """
  dt = q_BSHd.dtype
  S = q_BSHd.shape[1]
  # Keys and values are kv-head major [B,K,T,d], the layout both attention matmuls read without a transpose.
  keys, values = k_BSKd.swapaxes(1, 2), v_BSKd.swapaxes(1, 2)
  mask_of = lambda k_slots, key_valid, key_segment_ids: L.attention_mask(
      ctx["q_slots"], k_slots, key_valid, layer_consts["window"], ctx["segment_ids"], key_segment_ids)
  scale = q_BSHd.shape[-1] ** -0.5
  if cache is None:
    return L.attend(q_BSHd, keys, values, mask_of(ctx["k_slots"], ctx["key_valid"], ctx["key_segment_ids"]),
                    scale), None
  idx = ctx["write_index"]
  cache = dict(cache, k=_write_layer(cache["k"], keys, layer, 0, 0, idx, 0),
               v=_write_layer(cache["v"], values, layer, 0, 0, idx, 0))

  def whole_buffer():
    mask = mask_of(ctx["k_slots"], ctx["key_valid"], ctx["key_segment_ids"])
    return L.attend(q_BSHd, _read_layer(cache["k"], layer).astype(dt), _read_layer(cache["v"], layer).astype(dt),
                    mask, scale)

  if S == 1:
    return whole_buffer(), cache

  def own_keys():  # the cache is empty before this call: its keys are slots 0..S-1
    seg = ctx["key_segment_ids"]
    mask = mask_of(ctx["k_slots"][:S], ctx["key_valid"][:, :S], None if seg is None else seg[:, :S])
    rounded = lambda x: x.astype(cache["k"].dtype).astype(dt)  # as the cache would hand them back
    return L.causal_block_attend(q_BSHd, rounded(keys), rounded(values), mask, scale, PREFILL_ATTENTION_BLOCK)

  return jax.lax.cond(idx == 0, own_keys, whole_buffer), cache


class GQAttention(nn.Module):
  """Plain grouped-query attention (q/k/v projections, RoPE, no convolutions or q/k norm): the ablation
  baseline for CCA. Its decode cache keeps CCA's conv/delayed entries untouched, so the state has one layout."""
  config: ZayaConfig

  @nn.compact
  def __call__(self, x_BSD, ctx, layer_consts, cache, layer):
    cfg = self.config
    dt, pdt = cfg.compute_dtype, jnp.dtype(cfg.param_dtype)
    B, S, D = x_BSD.shape
    H, K, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    init = nn.initializers.normal(cfg.initializer_range)
    wq = _param(self, "q_proj", init, (D, H * d), ("embed", "q_heads"), pdt)
    wk = _param(self, "k_proj", init, (D, K * d), ("embed", "kv_heads"), pdt)
    wv = _param(self, "v_proj", init, (D, K * d), ("embed", "kv_heads"), pdt)
    wo = _param(self, "o_proj", init, (H * d, D), ("q_heads", "embed"), pdt)
    q = L.apply_rope(L.linear(x_BSD, wq, dt=dt).reshape(B, S, H, d), ctx["positions"], layer_consts["inv_freq"], dt)
    k = L.apply_rope(L.linear(x_BSD, wk, dt=dt).reshape(B, S, K, d), ctx["positions"], layer_consts["inv_freq"], dt)
    v = L.linear(x_BSD, wv, dt=dt).reshape(B, S, K, d)
    out, cache = _cached_attention(q, k, v, ctx, layer_consts, cache, layer)
    return L.linear(out, wo, dt=dt), cache


class Param(nn.Module):
  """Holds one parameter under its own scope, so e.g. the router's norm weight keeps the path norm/weight."""
  pname: str
  shape: tuple[int, ...]
  initializer: Any
  axes: tuple[str, ...]
  dtype: Any

  @nn.compact
  def __call__(self):
    return _param(self, self.pname, self.initializer, self.shape, self.axes, self.dtype)


class Router(nn.Module):
  """ZAYA router (ZAYA1.md §3.6): EDA carry, RMSNorm, GELU MLP, softmax over experts + skip, biased top-1.

  The math is `routing.route`; with router_impl 'pallas' the fused Pallas kernel computes the same function.
  """
  config: ZayaConfig
  use_eda: bool

  @nn.compact
  def __call__(self, x_BSD, carry_BSR):
    cfg = self.config
    pdt = jnp.dtype(cfg.param_dtype)
    D, R, NC = x_BSD.shape[-1], cfg.router_hidden_size, cfg.num_router_classes
    init = nn.initializers.normal(cfg.initializer_range)
    zeros, ones = nn.initializers.zeros, nn.initializers.ones
    beta = _param(self, "balancing_biases", _skip_bias_init, (NC,), ("router_classes",), F32)
    lead = x_BSD.shape[:-1]
    x = x_BSD.reshape(-1, D).astype(cfg.compute_dtype)
    if cfg.router_type == "linear":  # ablation: the router state passes through untouched
      w = _param(self, "linear_kernel", init, (D, NC), ("embed", "router_classes"), pdt)
      choice, weight, logits = routing.linear_route(x, {"linear_kernel": w, "balancing_biases": beta})
      return choice.reshape(lead), weight.reshape(lead), logits.reshape(lead + (NC,)), carry_BSR
    p = {
        "down_proj_kernel": _param(self, "down_proj_kernel", init, (D, R), ("embed", "router"), pdt),
        "down_proj_bias": _param(self, "down_proj_bias", zeros, (R,), ("router",), pdt),
        "norm": {"weight": Param("weight", (R,), ones, ("router",), pdt, name="norm")()},
        "fc1_kernel": _param(self, "fc1_kernel", init, (R, R), ("router", "router_out"), pdt),
        "fc1_bias": _param(self, "fc1_bias", zeros, (R,), ("router_out",), pdt),
        "fc2_kernel": _param(self, "fc2_kernel", init, (R, R), ("router", "router_out"), pdt),
        "fc2_bias": _param(self, "fc2_bias", zeros, (R,), ("router_out",), pdt),
        "out_proj_kernel": _param(self, "out_proj_kernel", init, (R, NC), ("router", "router_classes"), pdt),
        "balancing_biases": beta,
    }
    if self.use_eda:
      p["router_states_scale"] = _param(self, "router_states_scale", ones, (R,), ("router",), pdt)
    carry = carry_BSR.reshape(-1, R) if self.use_eda else None
    if cfg.router_impl == "pallas":
      from pallas_kernels import router as pallas_router  # only this path needs the kernels
      out = pallas_router.zaya_router(x, carry, p, eps=cfg.rms_norm_eps, use_eda=self.use_eda)
    else:
      out = routing.route(x, carry, p, eps=cfg.rms_norm_eps, use_eda=self.use_eda)
    choice, weight, logits, h = out
    return (choice.reshape(lead), weight.reshape(lead), logits.reshape(lead + (NC,)), h.reshape(lead + (R,)))


class Experts(nn.Module):
  """E SwiGLU experts; the dispatch implementation is config.moe_impl (zaya_jax/moe.py), expert-parallel over
  the mesh's `expert` axis when one is set with `jax.set_mesh` (zaya_jax/expert_parallel.py)."""
  config: ZayaConfig

  @nn.compact
  def __call__(self, x_ND, choice_N, weight_N):
    cfg = self.config
    pdt = jnp.dtype(cfg.param_dtype)
    E, D, I = cfg.num_experts, x_ND.shape[-1], cfg.moe_intermediate_size
    init = nn.initializers.normal(cfg.initializer_range)
    gate_up = _param(self, "gate_up_proj", init, (E, D, 2 * I), ("expert", "embed", "mlp"), pdt)
    down = _param(self, "down_proj", init, (E, I, D), ("expert", "mlp", "embed"), pdt)
    x_ND = x_ND.astype(cfg.compute_dtype)
    mesh = expert_parallel.active_expert_mesh()
    if mesh is None:
      return moe.expert_ffn(x_ND, choice_N, weight_N, gate_up, down, moe_impl=cfg.moe_impl,
                            block_size=cfg.moe_block_size)
    batch_axes = tuple(a for a in expert_parallel.BATCH_AXES if a in mesh.axis_names)
    out, dropped = expert_parallel.expert_parallel_ffn(
        x_ND, choice_N, weight_N, gate_up, down, mesh=mesh, batch_axes=batch_axes, moe_impl=cfg.moe_impl,
        block_size=cfg.moe_block_size, capacity_factor=cfg.moe_capacity_factor, transport=cfg.moe_transport)
    self.sow("metrics", "dropped_tokens", dropped)
    return out


class MoE(nn.Module):
  config: ZayaConfig
  use_eda: bool

  @nn.compact
  def __call__(self, x_BSD, carry_BSR, forced_choice_BS=None):
    """forced_choice_BS [B,S] (router replay, -1 = the router's own): substituted before any dispatch, so every
    moe_impl and the expert-parallel path run the forced routes."""
    B, S, D = x_BSD.shape
    choice, weight, logits, carry = Router(self.config, self.use_eda, name="gate")(x_BSD, carry_BSR)
    if forced_choice_BS is not None:
      choice, weight = routing.force_top1(logits, choice, forced_choice_BS)
    out = Experts(self.config, name="experts")(x_BSD.reshape(B * S, D), choice.reshape(-1), weight.reshape(-1))
    return out.reshape(B, S, D), carry, {"expert_index": choice, "router_logits": logits}


class Block(nn.Module):
  """One decoder block: norm -> CCA -> residual scaling -> norm -> MoE -> residual scaling (the ablation
  switches attention_type / residual_scaling / router_type replace the parts they name).

  carry: (residual [B,S,D] fp32, router state [B,S,R], stacked decode cache or None, this block's index into
  the cache's layer axis); the cache is carried (not scanned over) so that each step writes only its new
  entries into it.
  """
  config: ZayaConfig
  use_eda: bool = True

  @nn.compact
  def __call__(self, carry, layer_consts, ctx):
    cfg = self.config
    dt, pdt = cfg.compute_dtype, jnp.dtype(cfg.param_dtype)
    r, router_carry, cache, layer = carry
    attention = CCAttention if cfg.attention_type == "cca" else GQAttention
    x = RMSNorm(cfg.rms_norm_eps, pdt, name="input_layernorm")(r.astype(dt))
    a, cache = attention(cfg, name="self_attn")(x, ctx, layer_consts, cache, layer)
    r = self._merge(a, r, "post_attention_residual_scale")
    x = RMSNorm(cfg.rms_norm_eps, pdt, name="post_attention_layernorm")(r.astype(dt))
    m, router_carry, aux = MoE(cfg, self.use_eda, name="mlp")(x, router_carry, layer_consts.get("expert_choices"))
    r = self._merge(m, r, "post_mlp_residual_scale")
    return (r, router_carry, cache, layer + 1), aux

  def _merge(self, h, r, name):
    """The learned ResidualScaling merge, or the plain residual sum h + r (ablation)."""
    if self.config.residual_scaling:
      return ResidualScaling(jnp.dtype(self.config.param_dtype), name=name)(h, r)
    return h.astype(F32) + r


def layer_constants(config: ZayaConfig):
  """Per-layer RoPE frequencies [L, R/2] and attention windows [L] (0 = full causal)."""
  inv = []
  for t in config.layer_types:
    theta = config.rope_theta if t == "hybrid" else config.sliding_rope_theta
    inv.append(L.rope_inv_freq(theta, config.rotary_dim))
  window = [config.sliding_window if t == "hybrid_sliding" else 0 for t in config.layer_types]
  return {"inv_freq": jnp.stack(inv), "window": jnp.asarray(window, jnp.int32)}


class Zaya(nn.Module):
  """ZAYA1 causal LM. __call__(input_ids, ctx, cache, inputs_embeds) -> (logits [B,S,V], new cache, aux).

  inputs_embeds [B,S,D], when given, replaces the embedding lookup (the tied head still uses the table).
  last_logits_only computes the LM head for the last position alone (logits [B,1,V]), as a prefill needs.
  expert_choices_BSL [B,S,L] int32, when given, forces each (token, layer)'s route (router replay, see
  `routing.force_top1`; -1 keeps the router's choice).
  """
  config: ZayaConfig

  @nn.compact
  def __call__(self, input_ids_BS, ctx, cache=None, inputs_embeds_BSD=None, last_logits_only=False,
               expert_choices_BSL=None):
    cfg = self.config
    dt, pdt = cfg.compute_dtype, jnp.dtype(cfg.param_dtype)
    D = cfg.hidden_size
    embedding = _param(self, "embed_tokens", nn.initializers.normal(cfg.initializer_range),
                       (cfg.vocab_size, D), ("vocab", "embed"), pdt)
    s_in = _param(self, "input_hidden_states_scale", nn.initializers.ones, (D,), ("norm",), pdt)
    b_in = _param(self, "input_hidden_states_bias", nn.initializers.zeros, (D,), ("norm",), pdt)
    if inputs_embeds_BSD is None:
      inputs_embeds_BSD = jnp.take(embedding, input_ids_BS, axis=0)
    emb = inputs_embeds_BSD.astype(dt)
    r = ((emb + b_in.astype(dt)) * s_in.astype(dt)).astype(F32)

    consts = layer_constants(cfg)
    if expert_choices_BSL is not None:  # a per-layer input like the constants: layer_0 and the scan slice it
      consts = dict(consts, expert_choices=jnp.moveaxis(expert_choices_BSL, -1, 0))
    first = jax.tree.map(lambda a: a[0], consts)
    rest = jax.tree.map(lambda a: a[1:], consts)
    # Block 0's cache gets a layer axis of one, so every block addresses its cache the same way.
    cache0 = None if cache is None else jax.tree.map(lambda a: a[None], cache["layer_0"])
    carry = (r, jnp.zeros(r.shape[:-1] + (cfg.router_hidden_size,), dt), cache0, 0)
    (r, router_carry, cache0, _), aux0 = Block(cfg, use_eda=False, name="layer_0")(carry, first, ctx)
    new_cache = None if cache is None else {"layer_0": jax.tree.map(lambda a: a[0], cache0)}
    auxes = [jax.tree.map(lambda a: a[None], aux0)]
    if cfg.num_hidden_layers > 1:
      ScannedBlocks = nn.scan(
          Block, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=(0, nn.broadcast),
          length=cfg.num_hidden_layers - 1, metadata_params={nn.PARTITION_NAME: "layers"})
      carry = (r, router_carry, None if cache is None else cache["layers"], jnp.int32(0))
      (r, _, cache_rest, _), aux_rest = ScannedBlocks(cfg, use_eda=True, name="layers")(carry, rest, ctx)
      if cache is not None:
        new_cache["layers"] = cache_rest
      auxes.append(aux_rest)
    if last_logits_only:
      r = r[:, -1:]
    h = RMSNorm(cfg.rms_norm_eps, pdt, name="norm")(r.astype(dt))
    logits = jnp.einsum("bsd,vd->bsv", h, embedding.astype(dt), preferred_element_type=F32).astype(dt)
    aux = jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *auxes)
    return logits, new_cache, aux
