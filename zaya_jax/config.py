"""ZayaConfig: the architecture hyper-parameters of a ZAYA1 model, validated on construction.

Field names follow transformers' `ZayaConfig` (`config.json`) so that a checkpoint's config maps 1:1; the
per-layer-type `rope_parameters` dict is flattened into `rope_theta` / `sliding_rope_theta` /
`partial_rotary_factor` (the only RoPE knobs the reference uses). The config is a frozen dataclass: hashable,
so it can be a static argument of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

LAYER_TYPES = ("hybrid", "hybrid_sliding")
MOE_IMPLS = ("auto", "reference", "gather", "blocked", "ragged_dot", "pallas")
MOE_TRANSPORTS = ("auto", "all_to_all", "ragged")
ROUTER_IMPLS = ("auto", "xla", "pallas")
DTYPES = ("float32", "bfloat16", "float16")

# transformers config.json keys that carry no architecture information for this implementation.
_HF_IGNORED_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "output_router_logits", "attention_dropout", "keys_to_ignore_at_inference", "_name_or_path",
    "initializer_range", "rope_type", "return_dict", "output_hidden_states", "output_attentions",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
    "tokenizer_class", "task_specific_params", "_attn_implementation_autoset", "router_aux_loss_coef",
    "generation_config",
})


class ConfigError(ValueError):
  """An invalid architecture configuration."""


@dataclasses.dataclass(frozen=True)
class ZayaConfig:
  """Architecture of a ZAYA1 model (defaults: ZAYA1-8B).

  Shapes derived from it: q width `num_attention_heads * head_dim`, k width `num_key_value_heads * head_dim`,
  conv channels = q width + k width, router classes `num_experts + 1` (the last one is the skip route).
  """

  vocab_size: int = 262272
  hidden_size: int = 2048
  num_hidden_layers: int = 40
  num_attention_heads: int = 8
  num_key_value_heads: int = 2
  head_dim: int = 128
  moe_intermediate_size: int = 2048
  num_experts: int = 16
  num_experts_per_tok: int = 1
  router_hidden_size: int = 256
  cca_time0: int = 2  # depthwise conv kernel size
  cca_time1: int = 2  # grouped (per-head) conv kernel size
  rms_norm_eps: float = 1e-5
  layer_types: tuple[str, ...] | None = None  # None: every layer "hybrid" (full causal attention)
  sliding_window: int | None = None  # window of "hybrid_sliding" layers, counting the current token
  rope_theta: float = 5_000_000.0  # RoPE base of "hybrid" layers
  sliding_rope_theta: float = 10_000.0  # RoPE base of "hybrid_sliding" layers
  partial_rotary_factor: float = 0.5  # fraction of head_dim that is rotated (NeoX half-split layout)
  max_position_embeddings: int = 131072
  tie_word_embeddings: bool = True
  hidden_act: str = "silu"
  bos_token_id: int | None = 2
  eos_token_id: int | tuple[int, ...] | None = 106
  pad_token_id: int | None = 0
  initializer_range: float = 0.02
  dtype: str = "float32"  # activation/compute dtype ("bfloat16" matches the released model)
  param_dtype: str = "float32"  # dtype of freshly initialised parameters
  # Ablations of the MoE++ architecture (ZAYA1 itself: "zaya", "cca", True). Not in transformers' format.
  router_type: str = "zaya"  # "zaya" (EDA + MLP router) | "linear" (one linear layer, same top-1 + biases)
  attention_type: str = "cca"  # "cca" | "gqa" (plain grouped-query attention, no convs or q/k norm)
  residual_scaling: bool = True  # learned ResidualScaling merges; False = plain residual sums
  # Expert dispatch (not architecture: every choice computes the same function; see zaya_jax/moe.py).
  moe_impl: str = "auto"  # auto | reference | gather | blocked | ragged_dot | pallas
  moe_block_size: int = 128  # rows per dense matmul block of the `blocked` dispatch (groups pad to it)
  moe_capacity_factor: float | None = None  # expert parallel: slots per device pair / (N_loc / ep); None = dropless
  moe_transport: str = "auto"  # expert parallel: all_to_all (padded) | ragged (GPU) | auto (ragged on GPU)
  # xla | pallas (the fused Pallas router kernel, same function) | auto = xla: on an H200 XLA's fusion of the
  # router was 1.3-1.9x faster than the kernel at 4k-16k tokens (README, benchmarks/gpu_kernels.py).
  router_impl: str = "auto"

  def __post_init__(self):
    if self.layer_types is None:
      object.__setattr__(self, "layer_types", ("hybrid",) * self.num_hidden_layers)
    else:
      object.__setattr__(self, "layer_types", tuple(self.layer_types))
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    self._validate()

  def _validate(self):
    positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "moe_intermediate_size", "num_experts", "router_hidden_size", "cca_time0",
                "cca_time1", "max_position_embeddings")
    for name in positive:
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if self.num_experts_per_tok != 1:
      raise ConfigError(f"num_experts_per_tok must be 1 (ZAYA routes each token to one expert or the skip route), "
                        f"got {self.num_experts_per_tok}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ConfigError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                        f"num_key_value_heads ({self.num_key_value_heads})")
    if (self.num_key_value_heads * self.head_dim) % 2:
      raise ConfigError("num_key_value_heads * head_dim must be even: the value is half current-token, "
                        "half delayed projection")
    if len(self.layer_types) != self.num_hidden_layers:
      raise ConfigError(f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is "
                        f"{self.num_hidden_layers}")
    unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
    if unknown:
      raise ConfigError(f"unknown layer_types {unknown}; known: {list(LAYER_TYPES)}")
    if "hybrid_sliding" in self.layer_types:
      if self.sliding_window is None:
        raise ConfigError("sliding_window must be set when layer_types contains 'hybrid_sliding'")
      if not isinstance(self.sliding_window, int) or self.sliding_window < 1:
        raise ConfigError(f"sliding_window must be a positive integer, got {self.sliding_window!r}")
    if not 0.0 < self.partial_rotary_factor <= 1.0:
      raise ConfigError(f"partial_rotary_factor must be in (0, 1], got {self.partial_rotary_factor}")
    if self.rotary_dim % 2:
      raise ConfigError(f"rotary dim head_dim * partial_rotary_factor = {self.rotary_dim} must be even")
    if self.rope_theta <= 0 or self.sliding_rope_theta <= 0:
      raise ConfigError("rope_theta and sliding_rope_theta must be positive")
    if self.rms_norm_eps <= 0:
      raise ConfigError(f"rms_norm_eps must be positive, got {self.rms_norm_eps}")
    if not self.tie_word_embeddings:
      raise ConfigError("tie_word_embeddings=False is not supported: ZAYA1 ties the LM head to the embedding")
    if self.hidden_act != "silu":
      raise ConfigError(f"hidden_act must be 'silu' (SwiGLU experts), got {self.hidden_act!r}")
    for name, allowed in (("router_type", ("zaya", "linear")), ("attention_type", ("cca", "gqa"))):
      if getattr(self, name) not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
    if self.moe_impl not in MOE_IMPLS:
      raise ConfigError(f"moe_impl must be one of {MOE_IMPLS}, got {self.moe_impl!r}")
    if not isinstance(self.moe_block_size, int) or self.moe_block_size < 1:
      raise ConfigError(f"moe_block_size must be a positive integer, got {self.moe_block_size!r}")
    if self.moe_capacity_factor is not None and not self.moe_capacity_factor > 0:
      raise ConfigError(f"moe_capacity_factor must be positive or None, got {self.moe_capacity_factor!r}")
    if self.moe_transport not in MOE_TRANSPORTS:
      raise ConfigError(f"moe_transport must be one of {MOE_TRANSPORTS}, got {self.moe_transport!r}")
    if self.router_impl not in ROUTER_IMPLS:
      raise ConfigError(f"router_impl must be one of {ROUTER_IMPLS}, got {self.router_impl!r}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ConfigError(f"{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
    eos = self.eos_token_id if isinstance(self.eos_token_id, tuple) else (self.eos_token_id,)
    for name, values in (("bos_token_id", (self.bos_token_id,)), ("pad_token_id", (self.pad_token_id,)),
                         ("eos_token_id", eos)):
      for value in values:
        if value is not None and not 0 <= value < self.vocab_size:
          raise ConfigError(f"{name}={value} is outside the vocabulary [0, {self.vocab_size})")

  # Derived sizes --------------------------------------------------------------------------------------------
  @property
  def q_width(self) -> int:
    return self.num_attention_heads * self.head_dim

  @property
  def kv_width(self) -> int:
    return self.num_key_value_heads * self.head_dim

  @property
  def conv_channels(self) -> int:
    return self.q_width + self.kv_width

  @property
  def conv_context(self) -> int:
    """Past raw q/k vectors the two stacked convolutions see: (K0 - 1) + (K1 - 1)."""
    return (self.cca_time0 - 1) + (self.cca_time1 - 1)

  @property
  def rotary_dim(self) -> int:
    return int(self.head_dim * self.partial_rotary_factor)

  @property
  def num_router_classes(self) -> int:
    return self.num_experts + 1

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  def replace(self, **changes) -> ZayaConfig:
    return dataclasses.replace(self, **changes)

  # transformers config.json ---------------------------------------------------------------------------------
  @classmethod
  def from_hf(cls, config: Mapping[str, Any] | str | os.PathLike, **overrides) -> ZayaConfig:
    """Builds a config from a transformers `config.json` (a dict, the file, or its directory).

    Unknown keys raise (they may change the architecture); `overrides` set JAX-side fields such as `dtype`.
    """
    if not isinstance(config, Mapping):
      path = os.fspath(config)
      if os.path.isdir(path):
        path = os.path.join(path, "config.json")
      if not os.path.exists(path):
        raise FileNotFoundError(f"no config.json at {path}")
      with open(path) as f:
        config = json.load(f)
    hf = dict(config)
    if hf.get("model_type", "zaya") != "zaya":
      raise ConfigError(f"model_type is {hf['model_type']!r}, expected 'zaya'")
    if hf.get("num_experts_per_tok", 1) != 1:
      raise ConfigError(f"num_experts_per_tok must be 1, got {hf['num_experts_per_tok']}")
    for key, expected in (("attention_bias", False), ("lm_head_bias", False)):
      if hf.pop(key, expected) != expected:
        raise ConfigError(f"{key}={not expected} is not supported (ZAYA1 uses {key}={expected})")
    rope = hf.pop("rope_parameters", None) or {}
    kwargs: dict[str, Any] = {}
    flat_theta = hf.pop("rope_theta", None)
    if flat_theta is not None and not rope:  # older flat form
      kwargs["rope_theta"] = float(flat_theta)
    factors = set()
    for layer_type, params in rope.items():
      if layer_type not in LAYER_TYPES:
        continue  # the stray top-level `rope_type` key some hub copies carry inside rope_parameters
      if params is None:
        continue
      if params.get("rope_type", "default") != "default":
        raise ConfigError(f"rope_parameters[{layer_type!r}].rope_type={params['rope_type']!r} is not supported; "
                          "only 'default' RoPE is implemented")
      theta = float(params.get("rope_theta", 10_000.0))
      kwargs["rope_theta" if layer_type == "hybrid" else "sliding_rope_theta"] = theta
      factors.add(float(params.get("partial_rotary_factor", 1.0)))
    if len(factors) > 1:
      raise ConfigError(f"partial_rotary_factor differs between layer types ({sorted(factors)}); "
                        "all layers must rotate the same number of dims")
    if factors:
      kwargs["partial_rotary_factor"] = factors.pop()
    for key in _HF_IGNORED_KEYS:
      hf.pop(key, None)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in hf if k not in fields)
    if unknown:
      raise ConfigError(f"config.json has keys this implementation does not know: {unknown}")
    kwargs.update({k: v for k, v in hf.items()})
    if kwargs.get("layer_types") is not None:
      kwargs["layer_types"] = tuple(kwargs["layer_types"])
    kwargs.update(overrides)
    return cls(**kwargs)

  @property
  def is_zaya(self) -> bool:
    """False for the ablation variants, which transformers' ZayaForCausalLM cannot represent."""
    return self.router_type == "zaya" and self.attention_type == "cca" and self.residual_scaling

  def to_hf(self) -> dict[str, Any]:
    """The transformers `config.json` dict (model_type "zaya") for this architecture."""
    if not self.is_zaya:
      raise ConfigError("ablation variants (router_type / attention_type / residual_scaling changed) have no "
                        "transformers format")
    rope = {
        "hybrid": {"rope_type": "default", "rope_theta": self.rope_theta,
                   "partial_rotary_factor": self.partial_rotary_factor},
        "hybrid_sliding": {"rope_type": "default", "rope_theta": self.sliding_rope_theta,
                           "partial_rotary_factor": self.partial_rotary_factor},
    }
    eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
    return {
        "architectures": ["ZayaForCausalLM"],
        "model_type": "zaya",
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads,
        "head_dim": self.head_dim,
        "moe_intermediate_size": self.moe_intermediate_size,
        "num_experts": self.num_experts,
        "num_experts_per_tok": self.num_experts_per_tok,
        "router_hidden_size": self.router_hidden_size,
        "cca_time0": self.cca_time0,
        "cca_time1": self.cca_time1,
        "rms_norm_eps": self.rms_norm_eps,
        "layer_types": list(self.layer_types),
        "sliding_window": self.sliding_window,
        "rope_parameters": rope,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": True,
        "hidden_act": self.hidden_act,
        "attention_bias": False,
        "lm_head_bias": False,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": self.pad_token_id,
        "initializer_range": self.initializer_range,
        "dtype": self.dtype,
    }

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> ZayaConfig:
    """From a plain mapping of field names (e.g. an ml_collections `ConfigDict.to_dict()`)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in d if k not in fields)
    if unknown:
      raise ConfigError(f"unknown ZayaConfig fields: {unknown}")
    return cls(**dict(d))
