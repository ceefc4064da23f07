"""Math answer extraction and Math-Verify equivalence against hand-checked cases."""

import threading
import time

import numpy as np
import pytest

from zaya_jax.data.corpus import MATH_FAMILIES, make_record
from zaya_jax.rewards import answers_equivalent, extract_answer, math_equal, math_reward


@pytest.mark.parametrize("text, expected", [
    ("The answer is \\boxed{42}.", "42"),
    ("\\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
    ("\\boxed{a{b{c}}d}", "a{b{c}}d"),
    ("\\fbox{7}", "7"),
    ("\\boxed{3} and finally \\fbox{4}", "4"),
    ("\\fbox{3} and finally \\boxed{4}", "4"),
    ("\\boxed{5} then cut off \\boxed{\\frac{1}{", "5"),  # unbalanced last box: previous one
    ("\\boxed{}", ""),
    ("no box here", None),
    ("only a cut \\boxed{12", None),
    ("<think>maybe \\boxed{1}</think> so \\boxed{2}", "2"),
    ("<think>\\boxed{1}</think> no box after", None),  # the thinking region is never searched
    ("<think>a</think>\\boxed{1}<think>b</think>\\boxed{3}", "3"),
    ("<think>still thinking \\boxed{9}", "9"),  # no </think>: the whole text
])
def test_extract_answer(text, expected):
  assert extract_answer(text) == expected


def test_extract_answer_require_think_close():
  assert extract_answer("<think>x \\boxed{9}", require_think_close=True) is None
  assert extract_answer("\\boxed{9}", require_think_close=True) is None
  assert extract_answer("<think>x</think>\\boxed{9}", require_think_close=True) == "9"


@pytest.mark.parametrize("prediction, gold", [
    ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "\\frac12"),
    ("\\sqrt{8}", "2\\sqrt{2}"),
    ("\\left(1, 2\\right)", "(1,2)"),
    ("\\{2, 1\\}", "\\{1, 2\\}"),
    ("[0, 1)", "[0,1)"),
    ("x=3", "3"),
    ("-5", "-5"),
    ("-5.0", "-5"),
    ("(x+1)^2", "x^2+2x+1"),
    ("$\\frac{\\sqrt{3}}{2}$", "\\sin(\\pi/3)"),
    ("(3, -2)", "(3, -2)"),
])
def test_math_equal_true(prediction, gold):
  assert math_equal(prediction, gold)


@pytest.mark.parametrize("prediction, gold", [
    ("5", "-5"),
    ("(0, 1]", "[0,1)"),
    ("2", "3"),
    ("\\frac{1}{3}", "0.34"),
    ("(2, 3)", "(3, 2)"),
    ("", "3"),
    ("   ", "3"),
    ("}{", "3"),
    ("\\frac{", "\\frac{1}{2}"),
    ("not a number", "3"),
])
def test_math_equal_false(prediction, gold):
  assert not math_equal(prediction, gold)


def test_math_equal_fast_path_skips_sympy(monkeypatch):
  import zaya_jax.rewards.math as rmath

  def fail(*args, **kwargs):
    raise AssertionError("Math-Verify called for identical answers")

  monkeypatch.setattr(rmath, "parse", fail)
  assert math_equal(" 1/2 ", "1/2") and math_equal("$7$", "7.") and math_equal("0.50", "1/2")


def test_math_equal_off_the_main_thread():
  results = {}

  def work():
    results["eq"] = math_equal("\\sqrt{8}", "2\\sqrt{2}")
    results["ne"] = math_equal("\\sqrt{8}", "3")

  thread = threading.Thread(target=work)
  thread.start()
  thread.join(timeout=30)
  assert results == {"eq": True, "ne": False}


def test_math_equal_times_out_on_the_main_thread():
  start = time.monotonic()
  assert not math_equal("9^{9^{9^{9}}}", "3", timeout_s=1)
  assert time.monotonic() - start < 10


def test_math_reward_and_corpus_solutions():
  assert math_reward("so \\boxed{\\frac{2}{4}}", "0.5") == 1.0
  assert math_reward("so \\boxed{3}", "4") == 0.0
  assert math_reward("no box, the answer is 4", "4") == 0.0
  assert math_reward("<think>\\boxed{4}", "4", require_think_close=True) == 0.0
  assert math_reward("<think>hm</think>\\boxed{4}", "4", require_think_close=True) == 1.0
  # Every built-in corpus solution scores 1 against its own answer and 0 against a shifted one.
  rng = np.random.default_rng(0)
  for family in MATH_FAMILIES:
    for difficulty in (1, 5):
      record = make_record(family, difficulty, seed=int(rng.integers(1000)), index=0)
      assert math_reward(record["solution"], record["answer"]) == 1.0, record
      assert math_reward(record["solution"] + " \\boxed{1234567}", record["answer"]) == 0.0, record


def test_answers_equivalent_is_symmetric():
  pairs = [("x=3", "3"), ("\\frac{1}{2}", "0.5"), ("2", "3"), ("\\{1,2\\}", "\\{2,1\\}")]
  for a, b in pairs:
    assert answers_equivalent(a, b) == answers_equivalent(b, a)
  assert answers_equivalent("3", "x=3") and not answers_equivalent("2", "3")
