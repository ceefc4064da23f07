"""grain input pipelines: mixed, tokenized, packed training batches and packed held-out eval batches.

Training, per phase (`config.get_phase`):

    per source:  documents[process_index::process_count] -> shuffle (new order each epoch) -> repeat
                 -> tokenize ([bos] + ids + [eos])
    mix sources by the phase's weights (grain `MapDataset.mix`)
    split documents longer than seq_len into seq_len chunks (nothing is truncated or dropped)
    first-fit pack chunks into rows of seq_len (`grain.experimental.FirstFitPackIterDataset`)
    batch rows -> dict of numpy arrays

Batch (every array int32, shape [B, S] with B = batch_size, S = seq_len):

    tokens       token ids; `tokenizer.pad_id` where segment_ids == 0
    segment_ids  0 = padding, 1..n = the n document chunks packed in that row, left to right
    positions    0, 1, ... restarting at each segment; 0 on padding
    loss_mask    1 at t iff tokens[t+1] is the next token of the same segment, i.e.
                 segment_ids[t] != 0 and segment_ids[t] == segment_ids[t+1]; the last column is 0.
                 The training loss is sum_t loss_mask[t] * CE(logits[t], tokens[t+1]) (so EOS is a
                 target, and no position predicts across a document boundary or into padding).

A document longer than S is split into chunks of S tokens; each chunk is its own segment (positions restart,
only the first chunk starts with BOS). Sharding: process p of P reads documents p, p+P, ... of every
source, so processes see disjoint documents; `batch_size` is per process and the global batch is
batch_size * process_count rows. The iterator is a grain `DatasetIterator`: `get_state()` / `set_state()`
resume exactly, and `grain.checkpoint.CheckpointSave(iterator)` saves it through orbax. A new phase needs a
new iterator (its mixture and seq_len differ); checkpoint the state of the current phase's iterator and
rebuild it with `config.phase_for_step(step)` on restore.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import grain
import numpy as np

from zaya_jax.data import config as config_lib
from zaya_jax.data import sources as sources_lib
from zaya_jax.data.tokenizer import Tokenizer

BATCH_KEYS = ("tokens", "segment_ids", "positions", "loss_mask")


class _Tokenize:
  """text -> int32 [bos, *encode(text), eos]."""

  def __init__(self, tokenizer: Tokenizer):
    self.tokenizer = tokenizer

  def __call__(self, text: str) -> dict[str, np.ndarray]:
    ids = [self.tokenizer.bos_id, *self.tokenizer.encode(text), self.tokenizer.eos_id]
    return {"tokens": np.asarray(ids, np.int32)}


class _SplitLongDocuments(grain.experimental.FlatMapTransform):
  """Cuts a tokenized document into chunks of at most seq_len tokens (the packer rejects longer ones)."""

  def __init__(self, seq_len: int):
    self.seq_len = seq_len
    self.max_fan_out = 1 << 20  # a bound grain asks for; documents are never split that finely

  def flat_map(self, element):
    tokens = element["tokens"]
    return [{"tokens": tokens[i:i + self.seq_len]} for i in range(0, len(tokens), self.seq_len)]


def loss_mask_from_segments(segment_ids: np.ndarray) -> np.ndarray:
  """int32 [..., S]: 1 where the next position continues the same non-padding segment (see module doc)."""
  mask = np.zeros_like(segment_ids, dtype=np.int32)
  mask[..., :-1] = (segment_ids[..., :-1] != 0) & (segment_ids[..., :-1] == segment_ids[..., 1:])
  return mask


def _to_batch(packed: dict[str, np.ndarray], pad_id: int) -> dict[str, np.ndarray]:
  segment_ids = packed["tokens_segment_ids"].astype(np.int32)
  tokens = np.where(segment_ids == 0, pad_id, packed["tokens"]).astype(np.int32)  # the packer pads with 0
  return {"tokens": tokens, "segment_ids": segment_ids,
          "positions": packed["tokens_positions"].astype(np.int32),
          "loss_mask": loss_mask_from_segments(segment_ids)}


def _check_args(seq_len: int, batch_size: int, process_index: int, process_count: int) -> None:
  if seq_len < 2 or batch_size < 1:
    raise ValueError(f"need seq_len >= 2 and batch_size >= 1, got seq_len={seq_len}, batch_size={batch_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")


def _shard(source, name: str, process_index: int, process_count: int) -> grain.MapDataset:
  ds = grain.MapDataset.source(source)[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f"source {name!r} has {len(source)} documents: none left for process {process_index} "
                     f"of {process_count}")
  return ds


def _seed(*parts: int) -> int:
  """A 32-bit seed mixing `parts` (grain shuffle seeds must be < 2**32)."""
  return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _pack(ds: grain.IterDataset, seq_len: int, num_bins: int, seed: int, shuffle_bins: bool):
  ds = grain.experimental.FlatMapIterDataset(ds, _SplitLongDocuments(seq_len))
  return grain.experimental.FirstFitPackIterDataset(ds, length_struct={"tokens": seq_len},
                                                    num_packing_bins=num_bins, seed=seed,
                                                    shuffle_bins=shuffle_bins)


def make_train_iterator(data_cfg, tokenizer: Tokenizer, seq_len: int, batch_size: int, seed: int,
                        process_index: int = 0, process_count: int = 1, *, phase: int | str = 0):
  """An endless, checkpointable iterator of packed training batches for one phase (module doc: batch spec).

  `seq_len` is the row length S (normally `phase.seq_len`); `batch_size` rows per process. The phase
  (index or name) supplies the source mixture; its index also enters the shuffle seeds so phases do not
  replay each other's document order.
  """
  _check_args(seq_len, batch_size, process_index, process_count)
  cfg = config_lib.as_dict(data_cfg)
  the_phase = config_lib.get_phase(cfg, phase)
  if not 0 <= seed < 2**31:
    raise ValueError(f"seed must be in [0, 2**31), got {seed}")
  names = [n for n, w in the_phase.mixture.items() if w > 0]  # grain's mix rejects zero weights
  datasets = []
  for i, name in enumerate(names):
    ds = _shard(sources_lib.make_source(cfg["sources"][name], name), name, process_index, process_count)
    if cfg["shuffle"]:
      ds = ds.shuffle(seed=_seed(seed, the_phase.index, i))
    datasets.append(ds.repeat().map(_Tokenize(tokenizer)))
  ds = grain.MapDataset.mix(datasets, [float(the_phase.mixture[n]) for n in names])
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg["read_threads"],
                                            prefetch_buffer_size=cfg["prefetch"]))
  ds = _pack(ds, seq_len, cfg["num_packing_bins"], _seed(seed, the_phase.index, len(names)),
             shuffle_bins=cfg["shuffle"])
  return iter(ds.batch(batch_size, drop_remainder=True).map(functools.partial(_to_batch,
                                                                             pad_id=tokenizer.pad_id)))


def make_eval_batches(data_cfg, tokenizer: Tokenizer, seq_len: int, batch_size: int, num_batches: int,
                      process_index: int = 0, process_count: int = 1) -> dict[str, list[dict[str, np.ndarray]]]:
  """Packed batches of every `eval_sources` entry, in document order (deterministic, no shuffling).

  Returns {source name: exactly `num_batches` batches} (same spec as training). Once a process's shard of
  a source is used up, the remaining rows and batches are all padding (loss_mask 0), so every process
  runs the same number of eval steps and padded rows add nothing to a masked loss sum.
  """
  _check_args(seq_len, batch_size, process_index, process_count)
  if num_batches < 1:
    raise ValueError(f"num_batches must be >= 1, got {num_batches}")
  cfg = config_lib.as_dict(data_cfg)
  if not cfg["eval_sources"]:
    raise config_lib.DataConfigError("data config has no eval_sources")
  out = {}
  for name, spec in cfg["eval_sources"].items():
    ds = _shard(sources_lib.make_source(spec, name), name, process_index, process_count)
    ds = ds.map(_Tokenize(tokenizer)).to_iter_dataset(grain.ReadOptions(num_threads=cfg["read_threads"],
                                                                        prefetch_buffer_size=cfg["prefetch"]))
    rows = _pack(ds, seq_len, cfg["num_packing_bins"], seed=0, shuffle_bins=False)
    rows = rows.map(functools.partial(_to_batch, pad_id=tokenizer.pad_id))
    batches, current = [], []
    for row in rows:
      current.append(row)
      if len(current) == batch_size:
        batches.append(_stack(current, batch_size, seq_len, tokenizer.pad_id))
        current = []
        if len(batches) == num_batches:
          break
    while len(batches) < num_batches:
      batches.append(_stack(current, batch_size, seq_len, tokenizer.pad_id))
      current = []
    out[name] = batches
  return out


def _stack(rows: list[Mapping[str, np.ndarray]], batch_size: int, seq_len: int,
           pad_id: int) -> dict[str, np.ndarray]:
  """rows (up to batch_size) -> a batch, padded with all-padding rows."""
  batch = {k: np.zeros((batch_size, seq_len), np.int32) for k in BATCH_KEYS}
  batch["tokens"][:] = pad_id
  for i, row in enumerate(rows):
    for k in BATCH_KEYS:
      batch[k][i] = row[k]
  return batch
