"""A ~1M-parameter ZAYA-architecture model that trains and samples on a laptop CPU in minutes."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      vocab_size=512,  # byte-level tokens plus special tokens, rounded up
      hidden_size=128,  # model width d
      num_hidden_layers=4,  # decoder blocks
      num_attention_heads=4,  # query heads
      num_key_value_heads=2,  # kv heads (GQA group 2)
      head_dim=32,  # per-head width
      moe_intermediate_size=128,  # SwiGLU width of each expert
      num_experts=4,  # routed experts (+ the skip route)
      num_experts_per_tok=1,  # top-1 routing, as ZAYA1
      router_hidden_size=32,  # width of the router MLP
      cca_time0=2,  # depthwise conv kernel over time
      cca_time1=2,  # per-head grouped conv kernel over time
      rms_norm_eps=1e-5,  # every RMSNorm
      layer_types=["hybrid_sliding", "hybrid", "hybrid_sliding", "hybrid"],  # alternate local/global blocks
      sliding_window=64,  # window of the sliding blocks (tokens, current one included)
      rope_theta=10_000.0,  # RoPE base of full-attention blocks
      sliding_rope_theta=10_000.0,  # RoPE base of sliding blocks
      partial_rotary_factor=0.5,  # rotate half of each head
      max_position_embeddings=4096,  # longest context it is meant for
      tie_word_embeddings=True,  # LM head = embedding matrix
      hidden_act="silu",  # expert activation
      bos_token_id=1,  # byte-level tokenizer's <bos>
      eos_token_id=2,  # byte-level tokenizer's <eos>
      pad_token_id=0,  # <pad>
      initializer_range=0.02,  # std of normal init
      dtype="float32",  # activation dtype (CPU)
      param_dtype="float32",  # parameter dtype
  ))
  return config
