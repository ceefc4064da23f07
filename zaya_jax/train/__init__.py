"""Pretraining: optimiser (Muon + AdamW), router load balancing, jitted steps, checkpointed training loop.

  train(config, workdir, feed=None, stop_at=None) -> TrainState   (zaya_jax/train/trainer.py)
  DataFeed, feed_for, pipeline_feed, synthetic_feed                    (zaya_jax/train/feeds.py)
  make_optimizer(optim_cfg, total_steps), make_schedule(optim_cfg, total_steps), param_labels(params)
  init_train_state, make_train_step, make_eval_step, next_token_loss, TrainState
  balancing: expert_counts, load_error, update_biases, router_metrics, get_biases, set_biases
"""

from zaya_jax.train.optimizer import make_optimizer, make_schedule, param_labels
from zaya_jax.train.steps import TrainState, init_train_state, make_eval_step, make_train_step, next_token_loss
from zaya_jax.train.feeds import DataFeed, feed_for, pipeline_feed, synthetic_feed
from zaya_jax.train.trainer import evaluate, model_config_from, train

__all__ = [
    "DataFeed", "TrainState", "evaluate", "feed_for", "pipeline_feed", "synthetic_feed", "init_train_state", "make_eval_step", "make_optimizer", "make_schedule",
    "make_train_step", "model_config_from", "next_token_loss", "param_labels", "train",
]
