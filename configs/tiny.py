"""A ~1M-parameter ZAYA-architecture model that trains and samples on a laptop CPU in minutes."""

import ml_collections

from zaya_jax import data


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
  # Device mesh (zaya_jax/sharding.py): one of the sizes may be -1.
  config.mesh = ml_collections.ConfigDict(dict(
      data=-1,  # data-parallel devices (-1 = all devices not used by the other axes)
      fsdp=1,  # data parallel with parameters sharded over it
      expert=1,  # expert parallelism: experts split over these devices (must divide num_experts)
      tensor=1,  # within-layer model parallelism
  ))
  config.optim = ml_collections.ConfigDict(dict(
      name="muon",  # "muon" (Muon on hidden matrices + AdamW elsewhere) or "adamw" (AdamW everywhere)
      lr=3e-3,  # peak learning rate, shared by both groups (Muon updates are RMS-matched to AdamW)
      schedule="wsd",  # "wsd" (warmup-stable-decay), "cosine" or "constant"
      warmup_steps=20,  # linear warmup from 0 to the peak
      decay_fraction=0.2,  # wsd: fraction of the steps spent in the final linear decay
      min_lr_ratio=0.1,  # final learning rate as a fraction of the peak (wsd and cosine)
      b1=0.9,  # AdamW first-moment decay
      b2=0.95,  # AdamW second-moment decay
      eps=1e-8,  # AdamW epsilon
      weight_decay=0.1,  # decoupled weight decay on matrices (lr-scaled); never on norms, biases, scales
      clip_norm=1.0,  # global gradient-norm clipping threshold
      muon_momentum=0.95,  # Muon momentum
      muon_nesterov=True,  # Nesterov momentum in Muon
      muon_ns_steps=5,  # Newton-Schulz iterations per orthogonalisation
      muon_rms=0.2,  # RMS of a Muon update after AdamW-RMS matching (Moonlight)
  ))
  config.train = ml_collections.ConfigDict(dict(
      steps=1000,  # optimiser steps in the whole run
      batch_size=16,  # sequences per step (global batch)
      seq_len=128,  # tokens per sequence
      seed=0,  # parameter init and training RNG
      log_every=10,  # steps between progress lines / metrics.jsonl records
      eval_every=200,  # steps between evaluations (0 = never)
      eval_batches=4,  # batches per evaluation, always the first ones of the eval split
      checkpoint_every=100,  # steps between checkpoints (a final one is always written)
      keep_checkpoints=3,  # how many recent checkpoints to keep
  ))
  config.balancing = ml_collections.ConfigDict(dict(
      rate=1e-2,  # AdamW step size of the router balancing biases (0 = biases frozen); fast enough to undo
                  # the early collapse onto one expert within a short run (1e-3 took ~500 steps here)
      b1=0.9,  # first-moment decay of the load-error moments
      b2=0.999,  # second-moment decay of the load-error moments
      eps=1e-8,  # AdamW epsilon
      weight_decay=0.0,  # decay of the biases towards 0
      skip_mode="experts",  # "experts": balance the E real experts, skip bias fixed; "all": all E+1 classes
  ))
  # Data: the built-in reasoning-first corpus (zaya_jax/data), the recipe's three phases at toy scale:
  # general -> math-heavy -> long-context reasoning (keys documented in zaya_jax/data/config.py).
  config.data = data.default_pretrain_config(steps=(300, 500, 200), seq_lens=(128, 128, 256))
  return config
