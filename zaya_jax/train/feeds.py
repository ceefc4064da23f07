"""Data feeds for the trainer: which iterator serves each split and pretraining phase.

A phase (a data mixture at one sequence length) owns one train iterator; when training crosses into the
next phase the trainer starts that phase's iterator fresh. A checkpoint holds the state of the iterator of
the phase its last step belonged to, so a resumed run rebuilds that phase's iterator and restores it.

Several processes: config.train.batch_size is the global batch; process p of P reads b = batch_size / P rows
per step from its own shard of the data (the pipeline: every P-th document of each source; synthetic data: rows
p*b .. p*b+b-1 of each global batch, so that any number of processes trains on the same global batches).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from typing import NamedTuple

import grain
import jax
import ml_collections

from zaya_jax.train.synthetic import synthetic_row


class DataFeed(NamedTuple):
  iterator: Callable[[str, int], Iterator[dict]]  # (split "train" | "eval", phase) -> batches
  phase_of: Callable[[int], int]  # 0-based step -> its phase


def local_batch_size(global_batch: int, process_count: int) -> int:
  """Rows each of `process_count` processes reads of a global batch of `global_batch` rows."""
  if global_batch < 1 or global_batch % process_count:
    raise ValueError(f"train.batch_size={global_batch} (the global batch) must be a positive multiple of the "
                     f"{process_count} processes")
  return global_batch // process_count


def process_row(index: int, global_batch: int, process_index: int, process_count: int) -> int:
  """Global row read by the `index`-th row of process p: batch k = index // b holds global rows k*B .. k*B+B-1,
  of which process p reads the p-th b = B / P, in order."""
  local = local_batch_size(global_batch, process_count)
  batch, offset = divmod(index, local)
  return batch * global_batch + process_index * local + offset


def _synthetic_iterator(split: str, *, batch_size: int, seq_len: int, vocab_size: int, seed: int,
                        process_index: int, process_count: int):
  """Process p's rows of zaya_jax/train/synthetic.py's global batches, as a checkpointable grain iterator."""
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  row = functools.partial(synthetic_row, seed, split, seq_len=seq_len, vocab_size=vocab_size)
  ds = grain.MapDataset.range(1 << 30).map(lambda i: row(process_row(i, batch_size, process_index, process_count)))
  return iter(ds.batch(local_batch_size(batch_size, process_count), drop_remainder=True).to_iter_dataset())


def synthetic_feed(config: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1) -> DataFeed:
  """One phase of zaya_jax/train/synthetic.py's packed documents at config.train's shapes; process p of P reads
  its share of every global batch (module doc)."""
  local_batch_size(config.train.batch_size, process_count)
  make = functools.partial(_synthetic_iterator, batch_size=config.train.batch_size, seq_len=config.train.seq_len,
                           vocab_size=config.model.vocab_size, seed=config.train.seed, process_index=process_index,
                           process_count=process_count)
  return DataFeed(lambda split, phase: make(split), lambda step: 0)


def pipeline_feed(config: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1) -> DataFeed:
  """The grain pipeline of config.data (zaya_jax/data): phases in order, each at its own seq_len; steps past
  the schedule stay in the last phase. Eval: config.data.eval_sources at config.train.seq_len, the sources'
  batches one after another. Process p of P reads config.train.batch_size / P rows per batch from its shard."""
  from zaya_jax import data  # grain pipeline, tokenizers: only needed with a data config

  data_cfg = config.data
  tokenizer = data.load_tokenizer(data_cfg.tokenizer)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise ValueError(f"tokenizer {data_cfg.tokenizer!r} has {tokenizer.vocab_size} ids but the model's "
                     f"vocab_size is {config.model.vocab_size}")
  all_phases = data.phases(data_cfg)
  batch_size = local_batch_size(config.train.batch_size, process_count)
  last_step = all_phases[-1].start_step + all_phases[-1].steps - 1

  def iterator(split: str, phase: int):
    if split == "train":
      return data.make_train_iterator(data_cfg, tokenizer, all_phases[phase].seq_len, batch_size,
                                      config.train.seed, process_index, process_count, phase=phase)
    if split != "eval":
      raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    per_source = max(1, -(-config.train.eval_batches // max(1, len(data_cfg.eval_sources))))
    batches = data.make_eval_batches(data_cfg, tokenizer, config.train.seq_len, batch_size, per_source,
                                     process_index, process_count)
    return itertools.chain.from_iterable(batches.values())

  return DataFeed(iterator, lambda step: data.phase_for_step(data_cfg, min(step, last_step)).index)


def feed_for(config: ml_collections.ConfigDict) -> DataFeed:
  """The pipeline feed when the config has a `data` group, else the synthetic one; this process's share."""
  make = pipeline_feed if "data" in config else synthetic_feed
  return make(config, jax.process_index(), jax.process_count())
