"""Data feeds for the trainer: which iterator serves each split and pretraining phase.

A phase (a data mixture at one sequence length) owns one train iterator; when training crosses into the
next phase the trainer starts that phase's iterator fresh. A checkpoint holds the state of the iterator of
the phase its last step belonged to, so a resumed run rebuilds that phase's iterator and restores it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from typing import NamedTuple

import ml_collections

from zaya_jax.train.synthetic import synthetic_iterator


class DataFeed(NamedTuple):
  iterator: Callable[[str, int], Iterator[dict]]  # (split "train" | "eval", phase) -> batches
  phase_of: Callable[[int], int]  # 0-based step -> its phase


def synthetic_feed(config: ml_collections.ConfigDict) -> DataFeed:
  """One phase of zaya_jax/train/synthetic.py's packed documents at config.train's shapes."""
  make = functools.partial(synthetic_iterator, batch_size=config.train.batch_size, seq_len=config.train.seq_len,
                           vocab_size=config.model.vocab_size, seed=config.train.seed)
  return DataFeed(lambda split, phase: make(split), lambda step: 0)


def pipeline_feed(config: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1) -> DataFeed:
  """The grain pipeline of config.data (zaya_jax/data): phases in order, each at its own seq_len; steps past
  the schedule stay in the last phase. Eval: config.data.eval_sources at config.train.seq_len, the sources'
  batches one after another."""
  from zaya_jax import data  # grain pipeline, tokenizers: only needed with a data config

  data_cfg = config.data
  tokenizer = data.load_tokenizer(data_cfg.tokenizer)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise ValueError(f"tokenizer {data_cfg.tokenizer!r} has {tokenizer.vocab_size} ids but the model's "
                     f"vocab_size is {config.model.vocab_size}")
  all_phases = data.phases(data_cfg)
  last_step = all_phases[-1].start_step + all_phases[-1].steps - 1

  def iterator(split: str, phase: int):
    if split == "train":
      return data.make_train_iterator(data_cfg, tokenizer, all_phases[phase].seq_len, config.train.batch_size,
                                      config.train.seed, process_index, process_count, phase=phase)
    if split != "eval":
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    per_source = max(1, -(-config.train.eval_batches // max(1, len(data_cfg.eval_sources))))
    batches = data.make_eval_batches(data_cfg, tokenizer, config.train.seq_len, config.train.batch_size,
                                     per_source, process_index, process_count)
    return itertools.chain.from_iterable(batches.values())

  return DataFeed(iterator, lambda step: data.phase_for_step(data_cfg, min(step, last_step)).index)


def feed_for(config: ml_collections.ConfigDict) -> DataFeed:
  """The pipeline feed when the config has a `data` group, else the synthetic one."""
  return pipeline_feed(config) if "data" in config else synthetic_feed(config)
