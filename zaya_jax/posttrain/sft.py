"""Supervised fine-tuning: the pretraining loop (zaya_jax/train/trainer.py) on chat-formatted SFT batches.

`run(config, workdir, init)` loads `init`, fills the config's model from it (zaya_jax/posttrain/stages.py),
and trains with `trainer.train(..., feed=sft_feed, init_params=...)`: the loss is the next-token loss on
assistant tokens only (zaya_jax/posttrain/sft_data.py), and checkpoints, exact resume, SIGTERM handling,
metrics.jsonl / TensorBoard / training.png and the eval loss (on held-out problems) come from the trainer.
A finished run scores greedy held-out accuracy and writes summary.json. configs/posttrain/sft.py documents
the config.
"""

from __future__ import annotations

import jax
import ml_collections

from zaya_jax.posttrain import stages
from zaya_jax.posttrain.sft_data import sft_feed
from zaya_jax.train import trainer


def run(config: ml_collections.ConfigDict, workdir: str, init: str):
  """Trains (or resumes) SFT from the checkpoint `init` in `workdir`; returns the params (final once
  config.train.steps are done, else those of the interrupted run, without a summary)."""
  config, loaded = stages.start_stage(config, workdir, init)
  feed = sft_feed(config, loaded.tokenizer, loaded.chat_template, jax.process_index(), jax.process_count())
  state = trainer.train(config, workdir, feed, init_params=loaded.params)
  if int(state.step) == config.train.steps:
    stages.finish_stage(config, workdir, init, state.params, loaded)
  return state.params
