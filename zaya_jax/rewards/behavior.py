"""Behavioural-stage shaping: a format reward, the degeneracy canary (spec §5.4) and an overlong penalty."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from zaya_jax.rewards.math import extract_answer

_OPEN, _CLOSE = "<think>", "</think>"
_BOX_OPENERS = ("\\boxed{", "\\fbox{")
_WINDOW_BITS = 10  # a 1 KiB LZ77 window, as the report's canary


def format_reward(text: str, *, require_think: bool = False) -> float:
  """1.0 if `text` is well-formed, else 0.0.

  Well-formed: the answer region (after `</think>` if present) holds exactly one `\\boxed{}`/`\\fbox{}`, closed
  and non-empty; at most one `<think>` and one `</think>`, and a `<think>` is closed by a later `</think>`.
  With `require_think` the `</think>` must be there (the `<think>` may be absent: chat templates that open the
  thinking block put it in the prompt), so the box comes after the thinking.
  """
  opens, closes = text.count(_OPEN), text.count(_CLOSE)
  if opens > 1 or closes > 1 or (opens and (not closes or text.index(_OPEN) > text.index(_CLOSE))):
    return 0.0
  if require_think and not closes:
    return 0.0
  region = text[text.index(_CLOSE) + len(_CLOSE):] if closes else text
  answer = extract_answer(region)
  return float(sum(region.count(opener) for opener in _BOX_OPENERS) == 1 and bool(answer and answer.strip()))


def degenerate(token_ids: Sequence[int], *, chunk_bytes: int = 1024, min_ratio: float = 0.05) -> bool:
  """The degeneracy canary: True if any chunk of the rollout compresses below `min_ratio` (compressed / raw).

  Token ids are encoded as 4-byte little-endian unsigned integers (every vocabulary fits, and the ratio does
  not depend on the vocabulary size), so the default 1 KiB chunk is 256 tokens. The bytes go through one
  streaming zlib compressor with a 1 KiB window, flushed (Z_SYNC_FLUSH) at every chunk boundary, so a chunk
  may refer back to the previous one: a loop with a period of up to ~190 tokens compresses to ~0.015, while
  byte-level prose stays near 0.2 and natural subword text near 0.45. The caller zeroes the reward of a
  degenerate rollout.
  """
  if chunk_bytes <= 0 or not 0 < min_ratio < 1:
    raise ValueError(f"need chunk_bytes > 0 and 0 < min_ratio < 1, got {chunk_bytes}, {min_ratio}")
  ids = np.asarray(token_ids, dtype=np.int64)
  if ids.size and (ids.min() < 0 or ids.max() >= 1 << 32):
    raise ValueError(f"token ids must be in [0, 2**32), got range [{ids.min()}, {ids.max()}]")
  data = ids.astype("<u4").tobytes()
  compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, _WINDOW_BITS)
  for start in range(0, len(data), chunk_bytes):
    chunk = data[start:start + chunk_bytes]
    compressed = compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
    if len(compressed) < min_ratio * len(chunk):
      return True
  return False


def length_penalty(num_tokens: int, budget: int, *, margin: int | None = None) -> float:
  """DAPO's soft overlong penalty, added to the reward: 0 up to `budget - margin` tokens, then falling
  linearly to -1 at `budget`, and -1 beyond. `margin` defaults to budget // 5 (DAPO: 4K of 20K)."""
  margin = budget // 5 if margin is None else margin
  if budget <= 0 or not 0 <= margin <= budget or num_tokens < 0:
    raise ValueError(f"need budget > 0, 0 <= margin <= budget and num_tokens >= 0, got budget={budget}, "
                     f"margin={margin}, num_tokens={num_tokens}")
  if num_tokens <= budget - margin:
    return 0.0
  if num_tokens >= budget:
    return -1.0
  return (budget - margin - num_tokens) / margin
