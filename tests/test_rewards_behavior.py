"""Behavioural shaping: format reward cases, the compression canary against a brute-force ratio, overlong penalty."""

import zlib

import numpy as np
import pytest

from zaya_jax.data.corpus import format_record, make_record
from zaya_jax.data.tokenizer import ByteTokenizer
from zaya_jax.rewards import degenerate, format_reward
from zaya_jax.rewards.behavior import length_penalty


@pytest.mark.parametrize("text, plain, think", [
    ("The answer is \\boxed{4}.", 1.0, 0.0),
    ("<think>2+2</think>The answer is \\boxed{4}.", 1.0, 1.0),
    ("reasoning...</think>So \\boxed{4}", 1.0, 1.0),  # <think> opened by the chat template
    ("<think>try \\boxed{3}</think> so \\boxed{4}", 1.0, 1.0),  # boxes while thinking do not count
    ("<think>2+2 is \\boxed{4}</think> four", 0.0, 0.0),  # the box must be in the answer
    ("\\boxed{3} or \\boxed{4}", 0.0, 0.0),
    ("\\boxed{4} \\fbox{4}", 0.0, 0.0),
    ("\\fbox{4}", 1.0, 0.0),
    ("\\boxed{}", 0.0, 0.0),
    ("\\boxed{ }", 0.0, 0.0),
    ("cut off \\boxed{\\frac{1}{", 0.0, 0.0),
    ("no answer", 0.0, 0.0),
    ("<think>never closed \\boxed{4}", 0.0, 0.0),
    ("</think> then <think> \\boxed{4}", 0.0, 0.0),
    ("<think>a</think><think>b</think>\\boxed{4}", 0.0, 0.0),
    ("<think>a</think>b</think>\\boxed{4}", 0.0, 0.0),
])
def test_format_reward(text, plain, think):
  assert format_reward(text) == plain
  assert format_reward(text, require_think=True) == think


def _ratios(ids, chunk_bytes=1024):
  """Brute force: each chunk's cost is what compressing the stream up to its end adds (1 KiB window)."""
  data = np.asarray(ids, dtype="<u4").tobytes()
  out, done = [], 0
  for end in range(chunk_bytes, len(data) + chunk_bytes, chunk_bytes):
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 10)
    size = len(c.compress(data[:end]) + c.flush(zlib.Z_SYNC_FLUSH))
    out.append((size - done) / len(data[end - chunk_bytes:end]))
    done = size
  return out


def test_degenerate_flags_loops_and_passes_normal_text():
  text = ByteTokenizer().encode(" ".join(format_record(make_record("word", 5, 0, i)) for i in range(6)))
  rng = np.random.default_rng(0)
  subword = np.minimum(rng.zipf(1.2, 3000), 200_000).tolist()
  loop = rng.integers(0, 200_000, 50).tolist() * 40
  for ids, expected in ((text, False), (subword, False), (text[:500] + loop, True), ([7] * 300, True),
                        ([], False), ([7] * 10, False)):  # a short rollout cannot reach a low ratio
    assert degenerate(ids) == expected
    ratios = _ratios(ids)
    assert (min(ratios, default=1.0) < 0.05) == expected, ratios
  assert min(_ratios(text)) > 0.1 and max(_ratios(loop)[1:]) < 0.03
  assert not degenerate([7] * 300, min_ratio=0.01)  # the threshold is respected
  with pytest.raises(ValueError, match="token ids"):
    degenerate([-1, 3])


def test_length_penalty():
  assert [length_penalty(n, 100) for n in (0, 80, 90, 95, 100, 150)] == [0.0, 0.0, -0.5, -0.75, -1.0, -1.0]
  assert length_penalty(101, 100, margin=0) == -1.0 and length_penalty(100, 100, margin=0) == 0.0
  with pytest.raises(ValueError):
    length_penalty(10, 100, margin=200)
