"""A small, learnable, packed synthetic dataset honouring the data pipeline's batch contract.

Each row packs documents of random length; a document is an arithmetic sequence of token ids (random start,
stride from {1, 2, 3}, modulo the vocabulary), so after its first two tokens every next token is predictable
and the loss of a working trainer falls well below log(V). Rows end in padding (segment id 0). Row i of a
split depends only on (seed, split, i); zaya_jax/train/feeds.py serves the rows as a grain iterator, so
`get_state()` / `set_state()` (and orbax's grain.checkpoint.CheckpointSave / CheckpointRestore) resume it
exactly.
"""

from __future__ import annotations

import numpy as np

from zaya_jax.data.pipeline import loss_mask_from_segments

_SPLITS = {"train": 0, "eval": 1}


def synthetic_row(seed: int, split: str, index: int, seq_len: int, vocab_size: int) -> dict[str, np.ndarray]:
  """One packed row: tokens, segment_ids, positions, loss_mask, each int32 [seq_len]."""
  rng = np.random.default_rng([seed, _SPLITS[split], index])
  tokens = np.zeros(seq_len, np.int32)
  segment_ids = np.zeros(seq_len, np.int32)
  positions = np.zeros(seq_len, np.int32)
  used = seq_len - int(rng.integers(0, max(1, seq_len // 8)))  # leave some padding at the end
  t, doc = 0, 1
  while t < used:
    length = min(int(rng.integers(4, max(5, seq_len // 2))), used - t)
    start, stride = int(rng.integers(0, vocab_size)), int(rng.integers(1, 4))
    tokens[t:t + length] = (start + stride * np.arange(length)) % vocab_size
    segment_ids[t:t + length] = doc
    positions[t:t + length] = np.arange(length)
    t, doc = t + length, doc + 1
  return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions,
          "loss_mask": loss_mask_from_segments(segment_ids)}
