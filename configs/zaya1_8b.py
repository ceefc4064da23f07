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
  # Training groups. The report publishes the optimiser family (Muon with AdamW-RMS matching) and the batch
  # (4096 x 4096 tokens) but no learning rate, schedule, weight decay or momentum: those below are common
  # Moonlight-style values, not Zyphra's.
  # Device mesh (zaya_jax/sharding.py): one of the sizes may be -1.
  config.mesh = ml_collections.ConfigDict(dict(
      data=1,  # pure data-parallel replicas
      fsdp=-1,  # parameters sharded over the remaining devices (-1 = all not used by the other axes)
      expert=8,  # expert parallelism: 2 of the 16 experts per device
      tensor=1,  # within-layer model parallelism
  ))
  config.optim = ml_collections.ConfigDict(dict(
      name="muon",  # "muon" (Muon on hidden matrices + AdamW elsewhere) or "adamw" (AdamW everywhere)
      lr=3e-4,  # peak learning rate, shared by both groups (Muon updates are RMS-matched to AdamW) [unpublished]
      schedule="wsd",  # "wsd" (warmup-stable-decay), "cosine" or "constant"
      warmup_steps=2000,  # linear warmup from 0 to the peak
      decay_fraction=0.1,  # wsd: fraction of the steps spent in the final linear decay
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
      steps=715_000,  # optimiser steps: ~12T tokens (pretraining phases 1+2) / 16.8M tokens per step
      batch_size=4096,  # sequences per step (global batch, report App. B)
      seq_len=4096,  # tokens per sequence (pretraining context)
      seed=0,  # parameter init and training RNG
      log_every=10,  # steps between progress lines / metrics.jsonl records
      eval_every=1000,  # steps between evaluations (0 = never)
      eval_batches=16,  # batches per evaluation, always the first ones of the eval split
      checkpoint_every=1000,  # steps between checkpoints (a final one is always written)
      keep_checkpoints=3,  # how many recent checkpoints to keep
  ))
  config.balancing = ml_collections.ConfigDict(dict(
      rate=1e-3,  # AdamW step size of the router balancing biases (AMD Primus port's value; 0 = frozen)
      b1=0.9,  # first-moment decay of the load-error moments
      b2=0.999,  # second-moment decay of the load-error moments
      eps=1e-8,  # AdamW epsilon
      weight_decay=0.0,  # decay of the biases towards 0
      skip_mode="experts",  # "experts": balance the E real experts, skip bias fixed; "all": all E+1 classes
  ))
  return config
