"""The decode benchmark's model (benchmarks/decode.py): ~14.5M parameters, ZAYA1's shape in miniature."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict(dict(
      vocab_size=4096,  # small BPE-sized vocabulary
      hidden_size=256,  # model width d
      num_hidden_layers=4,  # decoder blocks
      num_attention_heads=8,  # query heads
      num_key_value_heads=2,  # kv heads (GQA group 4)
      head_dim=32,  # per-head width
      moe_intermediate_size=256,  # SwiGLU width of each expert
      num_experts=16,  # routed experts (+ the skip route), as ZAYA1
      num_experts_per_tok=1,  # top-1 routing
      router_hidden_size=64,  # width of the router MLP
      max_position_embeddings=4096,  # longest context it is meant for
      bos_token_id=1,
      eos_token_id=2,
      pad_token_id=0,
      dtype="float32",  # CPU benchmark: fp32 on both sides
      param_dtype="float32",
  ))
  return config
