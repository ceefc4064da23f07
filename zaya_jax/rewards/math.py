"""Math answer extraction and equivalence (spec §6.1): the last `\\boxed{}` after `</think>`, checked with Math-Verify.

`extract_answer` follows the Hendrycks-MATH `last_boxed_only_string` convention used by the RSA code, verl and
NeMo-RL: the last `\\boxed{...}` or `\\fbox{...}`, brace-depth matched, in the answer region (after the last
`</think>`). `math_equal` parses both sides into SymPy with Math-Verify and calls `verify(gold, prediction)`;
the order matters (an assignment `x=3` in the prediction matches a gold `3`, not the other way round in every
case), so `answers_equivalent` tries both orders for majority-vote clustering.

Timeouts: Math-Verify bounds parsing and comparison with `signal.alarm`, which only works on the main thread
(and only in whole seconds: `timeout_s` is rounded up). Off the main thread `math_equal` disables those
timeouts rather than fail, so a pathological prediction (e.g. a tower of exponents) can run for long there;
score untrusted text from worker processes, not threads, when that matters.
"""

from __future__ import annotations

import math
import threading

from math_verify import parse, verify
from math_verify.errors import TimeoutException

from zaya_jax.data.corpus import normalize_answer

_BOX_OPENERS = ("\\boxed{", "\\fbox{")
_THINK_CLOSE = "</think>"


def _last_box(text: str) -> str | None:
  """Content of the last balanced `\\boxed{...}`/`\\fbox{...}` in `text`; cut-off boxes are skipped."""
  starts = sorted((i + len(opener), i) for opener in _BOX_OPENERS for i in _find_all(text, opener))
  for content_start, _ in reversed(starts):
    depth = 1
    for i in range(content_start, len(text)):
      depth += {"{": 1, "}": -1}.get(text[i], 0)
      if depth == 0:
        return text[content_start:i]
  return None


def _find_all(text: str, sub: str) -> list[int]:
  out, i = [], text.find(sub)
  while i != -1:
    out.append(i)
    i = text.find(sub, i + 1)
  return out


def extract_answer(text: str, *, require_think_close: bool = False) -> str | None:
  """The content of the last `\\boxed{...}` or `\\fbox{...}` in the answer region of `text`, or None.

  The answer region is the text after the last `</think>` if there is one, else the whole text; with
  `require_think_close` a response without `</think>` has no answer (Delethink's scorer). Nested braces are
  matched; an unbalanced (cut-off) last box falls back to the previous balanced one.
  """
  close = text.rfind(_THINK_CLOSE)
  if close == -1 and require_think_close:
    return None
  return _last_box(text[close + len(_THINK_CLOSE):] if close != -1 else text)


def _as_math(answer: str) -> str:
  """`answer` as inline LaTeX for Math-Verify's extractors (which look for `$...$`, `\\boxed{}`...)."""
  return f"${answer.strip().strip('$')}$"


def math_equal(prediction: str, gold: str, *, timeout_s: float = 5.0) -> bool:
  """Whether `prediction` is mathematically equal to `gold` (Math-Verify's `verify(gold, prediction)`).

  Identical answers after `normalize_answer` are equal without SymPy. Never raises: an empty answer or one
  that does not parse is unequal. `timeout_s` bounds parsing and comparison, each, on the main thread only
  (module docstring).
  """
  if not prediction.strip() or not gold.strip():
    return False
  if normalize_answer(prediction) == normalize_answer(gold):
    return True
  seconds = max(1, math.ceil(timeout_s)) if threading.current_thread() is threading.main_thread() else None
  try:
    gold_parsed = parse(_as_math(gold), parsing_timeout=seconds)
    pred_parsed = parse(_as_math(prediction), parsing_timeout=seconds)
    return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=seconds))
  except (Exception, TimeoutException):  # Math-Verify catches most errors itself; a stray one: "not shown equal"
    return False


def math_reward(text: str, gold: str, *, require_think_close: bool = False) -> float:
  """1.0 if the answer extracted from `text` (`extract_answer`) equals `gold` (`math_equal`), else 0.0."""
  answer = extract_answer(text, require_think_close=require_think_close)
  return float(answer is not None and math_equal(answer, gold))


def answers_equivalent(a: str, b: str) -> bool:
  """Symmetric equivalence for majority-vote clustering: `math_equal` in either order."""
  return math_equal(a, b) or math_equal(b, a)
