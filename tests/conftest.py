"""Shared fixtures: small configs and their randomised reference models (built once per session)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

from zaya_jax.config import ZayaConfig  # noqa: E402

TINY_CONFIGS = {
    # 3 full-attention blocks, GQA 4q/2kv, the 8B's conv kernels and partial rotary factor.
    "base": ZayaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, moe_intermediate_size=32, num_experts=4,
                       router_hidden_size=16, rope_theta=10_000.0, eos_token_id=1),
    # Mixed sliding/full layers, one kv head (value = [current half ; delayed half] in one head),
    # a longer depthwise kernel, full rotary, other RoPE bases.
    "sliding": ZayaConfig(vocab_size=96, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=1, head_dim=12, moe_intermediate_size=24, num_experts=3,
                          router_hidden_size=12, cca_time0=3, cca_time1=2, partial_rotary_factor=1.0,
                          layer_types=("hybrid_sliding", "hybrid", "hybrid_sliding", "hybrid"),
                          sliding_window=3, rope_theta=500.0, sliding_rope_theta=50.0, eos_token_id=1),
    # No GQA grouping (2q/2kv), no depthwise context, a longer grouped kernel, 1/4 rotary, two blocks.
    "mha": ZayaConfig(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, head_dim=16, moe_intermediate_size=16, num_experts=2,
                      router_hidden_size=8, cca_time0=1, cca_time1=3, partial_rotary_factor=0.25,
                      rope_theta=1000.0, eos_token_id=1),
    # A single block (no scanned stack).
    "one_layer": ZayaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=16, moe_intermediate_size=16, num_experts=2,
                            router_hidden_size=8, rope_theta=1000.0, eos_token_id=1),
}


@pytest.fixture(scope="session")
def reference_models():
  """name -> (config, fp32 transformers model, jax params), built lazily and cached."""
  import hf_oracle

  cache = {}

  def get(name):
    if name not in cache:
      config = TINY_CONFIGS[name]
      model = hf_oracle.random_hf_model(config, seed=len(cache) + 1)
      cache[name] = (config, model, hf_oracle.jax_params_from_hf(model, config))
    return cache[name]

  return get
