"""ZAYA1-8B: the released architecture (8.84B parameters, 760M active per token)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      vocab_size=262272,  # Gemma-3 tokenizer
      hidden_size=2048,  # model width d
      num_hidden_layers=40,  # decoder blocks (CCA attention + MoE each)
      num_attention_heads=8,  # query heads
      num_key_value_heads=2,  # kv heads (GQA group 4)
      head_dim=128,  # per-head width
      moe_intermediate_size=2048,  # SwiGLU width of each expert
      num_experts=16,  # routed experts; the router has one more class, the skip route
      num_experts_per_tok=1,  # top-1 routing
      router_hidden_size=256,  # width of the router MLP
      cca_time0=2,  # depthwise conv kernel over time
      cca_time1=2,  # per-head grouped conv kernel over time
      rms_norm_eps=1e-5,  # every RMSNorm, the router's included
      layer_types=["hybrid"] * 40,  # full causal attention in every block
      sliding_window=None,  # no sliding-window blocks
      rope_theta=5_000_000.0,  # RoPE base of full-attention blocks
      sliding_rope_theta=10_000.0,  # RoPE base of sliding blocks (unused here)
      partial_rotary_factor=0.5,  # rotate 64 of 128 dims
      max_position_embeddings=131072,  # longest supported context
      tie_word_embeddings=True,  # LM head = embedding matrix
      hidden_act="silu",  # expert activation (SwiGLU gate)
      bos_token_id=2,  # <bos>
      eos_token_id=106,  # <end_of_turn>
      pad_token_id=0,  # <pad>
      initializer_range=0.02,  # std of normal init for fresh weights
      dtype="bfloat16",  # activation dtype, as released; the residual stream stays fp32
      param_dtype="float32",  # fp32 master weights for training
  ))
  return config
