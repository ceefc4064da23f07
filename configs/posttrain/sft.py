"""SFT of the tiny pretrained model: step-by-step solutions to easy built-in problems, in chat format, with
aggregation cold-start examples mixed in (spec §5.4).

  python experiments/posttrain.py --config=configs/posttrain/sft.py --workdir=/tmp/post/sft --init=/tmp/pre/tiny

No `model` group: the architecture comes from --init (zaya_jax/posttrain/stages.py); a `model` group may set
the runtime fields dtype / moe_impl / moe_block_size / moe_capacity_factor / moe_transport / router_impl.

Measured from the 1000-step tiny model (README): greedy held-out 2.2% -> 14.3% of 1000 problems (the earlier
corpus: 0.0% -> 19.5% of 200, 6.0% after 200 steps); ~14 minutes on 2 idle cores. Far from converged: a second
run of this config from its output with another data order (`sft_continue.py`, the pipeline's next stage)
reached 38.4%.
"""

import ml_collections

from configs.posttrain import heldout_config
from zaya_jax.data import corpus


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.stage = "sft"
  config.optim = ml_collections.ConfigDict(dict(
      name="muon",  # as pretraining: Muon on hidden matrices, AdamW elsewhere
      lr=2e-3,  # peak learning rate (two thirds of pretraining's)
      schedule="wsd",  # warmup-stable-decay
      warmup_steps=10,  # linear warmup from 0 to the peak
      decay_fraction=0.3,  # fraction of the steps spent in the final linear decay
      min_lr_ratio=0.1,  # final learning rate as a fraction of the peak
      b1=0.9,  # AdamW first-moment decay
      b2=0.95,  # AdamW second-moment decay
      eps=1e-8,  # AdamW epsilon
      weight_decay=0.1,  # decoupled weight decay on matrices
      clip_norm=1.0,  # global gradient-norm clipping threshold
      muon_momentum=0.95,  # Muon momentum
      muon_nesterov=True,  # Nesterov momentum in Muon
      muon_ns_steps=5,  # Newton-Schulz iterations per orthogonalisation
      muon_rms=0.2,  # RMS of a Muon update after AdamW-RMS matching
  ))
  config.train = ml_collections.ConfigDict(dict(
      steps=600,  # optimiser steps (~3.3M tokens; held-out accuracy was still rising at 200, README)
      batch_size=4,  # packed rows per step
      seq_len=1024,  # tokens per row; long enough for an aggregation example (4 tails + question + solution)
      seed=0,  # data order and the (unused) training RNG; the params come from --init
      log_every=10,  # steps between progress lines / metrics.jsonl records
      eval_every=200,  # steps between eval-loss measurements on held-out problems (assistant tokens only)
      eval_batches=2,  # batches per evaluation
      checkpoint_every=100,  # steps between checkpoints (a final one is always written)
      keep_checkpoints=2,  # how many recent checkpoints to keep
  ))
  config.balancing = ml_collections.ConfigDict(dict(
      rate=1e-3,  # router bias balancing keeps running, gentler than in pretraining (the load is balanced)
      b1=0.9,  # first-moment decay of the load-error moments
      b2=0.999,  # second-moment decay
      eps=1e-8,  # AdamW epsilon
      weight_decay=0.0,  # decay of the biases towards 0
      skip_mode="experts",  # balance the E real experts; the skip bias stays fixed
  ))
  # SFT data (zaya_jax/posttrain/sft_data.py); mixture weights are per example.
  config.sft = ml_collections.ConfigDict(dict(
      mixture=dict(problems=0.9, aggregation=0.1, jsonl=0.0),
      problems=dict(  # problem -> step-by-step solution ending in \boxed{answer}
          families=list(corpus.MATH_FAMILIES),
          difficulties=[1, 2],
          seed=0,  # which problems (train split)
          num_records=1_000_000,  # problems to draw from (cycled families x difficulties)
      ),
      aggregation=dict(  # aggregation prompt (question + C candidate tails) -> correct solution
          families=list(corpus.MATH_FAMILIES),  # math only: wrong candidates get a corrupted number
          difficulties=[1, 2],
          seed=1,  # which problems, and which candidates are corrupted
          num_records=1_000_000,
          candidates=4,  # C
          tail=32,  # τ: tokens kept from the end of each candidate (the last step and the boxed answer)
          wrong_fraction=0.5,  # probability that a candidate has a corrupted step or final answer
      ),
      jsonl=dict(paths=[]),  # {"messages": [...]} or {"prompt", "response"} lines; give it a weight to use it
      num_packing_bins=16,  # rows packed at once (first-fit)
  ))
  config.heldout = heldout_config()
  return config
