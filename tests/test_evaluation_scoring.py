"""Grading by family (boxed math with Math-Verify, multiple-choice letters, sandboxed code) and clustering."""

import pytest

from zaya_jax.evaluation import Graded, Problem, cluster, extract_choice, grade
from zaya_jax.rewards.math import answers_equivalent


@pytest.mark.parametrize("text, answer, correct", [
    ("so \\boxed{3} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True),  # the last box counts
    ("\\boxed{0.5}", "0.5", True),  # numerically equal to the gold 1/2
    ("<think>\\boxed{1/2}</think> so \\boxed{2}", "2", False),  # only the answer region counts
    ("\\boxed{1/2} and then \\boxed{3", "1/2", True),  # a cut-off last box falls back to the previous one
    ("one half", None, False),
])
def test_math(text, answer, correct):
  assert grade("math", Problem("p", "q", "1/2"), text) == Graded(answer, correct)


@pytest.mark.parametrize("text, letter", [
    ("\\boxed{B}", "B"),
    ("\\boxed{\\text{(C)}}.", "C"),
    ("so the answer is (D).", "D"),
    ("**Answer: A**", "A"),
    ("Answer: B, no wait, the answer is C", "C"),  # the last phrase
    ("\\boxed{E}", None),  # not one of the 4 choices
    ("the answer is a bit unclear", None),  # a lowercase article is not a choice
    ("<think>the answer is B</think>\\boxed{A}", "A"),
    ("<think>\\boxed{B}</think>no answer", None),
])
def test_multiple_choice_letters(text, letter):
  assert extract_choice(text, 4) == letter
  assert grade("multiple_choice", Problem("p", "q", "C", num_choices=4), text).correct == (letter == "C")


ECHO_SUM = "```python\nprint(sum(map(int, input().split())))\n```"


@pytest.mark.parametrize("text, correct, status", [
    (ECHO_SUM, True, "ok"),
    ("```python\nprint(1)\n```", False, "wrong_answer"),  # passes the first test, fails the second
    ("<think>```python\nprint(sum(map(int, input().split())))\n```</think>I give up", False, "no_code"),
    ("```python\nwhile True: pass\n```", False, "timeout"),
])
def test_code_passes_only_if_every_test_passes(text, correct, status):
  problem = Problem("c", "q", tests=({"input": "1 0\n", "output": "1\n"}, {"input": "2 3\n", "output": "5\n"}),
                    time_limit_s=1.0)
  assert grade("code", problem, text) == Graded(None, correct, status)


def test_call_based_code():
  problem = Problem("c", "q", tests=({"input": "[1, 2]", "output": "3"},), fn_name="add")
  text = "```python\nclass Solution:\n  def add(self, xs):\n    return sum(xs)\n```"
  assert grade("code", problem, text).correct


def test_cluster_groups_equivalent_answers():
  answers = ["1/2", None, "\\frac{1}{2}", "3", "0.5", "3", None]
  assert cluster(answers, answers_equivalent) == [0, None, 0, 1, 0, 1, None]
  assert cluster(["B", "A", "B"], str.__eq__) == [0, 1, 0]
