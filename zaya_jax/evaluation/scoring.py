"""Grading one response by benchmark family, and clustering answers for majority votes (spec §6).

- math: the last `\\boxed{}` of the answer region (after `</think>` when present) checked against the gold
  answer with Math-Verify (`zaya_jax.rewards.math`); answers cluster by symmetric Math-Verify equivalence.
- multiple choice: a letter, from the last `\\boxed{}` if it holds one, else from the last "answer is X" /
  "Answer: X" phrase of the answer region; answers cluster by equality.
- code: the last fenced code block of the answer region must pass every test in the sandbox
  (`zaya_jax.rewards.code.run_tests`); programs are not clustered (no majority vote).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
from collections.abc import Callable, Sequence

from zaya_jax.evaluation.benchmarks import Problem
from zaya_jax.rewards.code import extract_code, run_tests
from zaya_jax.rewards.math import answers_equivalent, extract_answer, math_equal

_THINK_CLOSE = "</think>"
_LETTER_IN_BOX = re.compile(r"^\s*(?:\\(?:text|mathrm|textbf)\{)?\s*\(?([A-Za-z])\)?\s*\}?\s*\.?\s*$")
_ANSWER_PHRASE = re.compile(r"[Aa]nswer(?:\s+is)?\s*[:：]?\s*[*_]*\s*\(?([A-Z])\)?(?![A-Za-z])")


@dataclasses.dataclass(frozen=True)
class Graded:
  """answer: the extracted answer (math, multiple choice) or None; status: the sandbox verdict (code)."""
  answer: str | None
  correct: bool
  status: str = ""


def answer_region(text: str) -> str:
  """The text after the last `</think>`, or all of it when there is none."""
  close = text.rfind(_THINK_CLOSE)
  return text if close == -1 else text[close + len(_THINK_CLOSE):]


def extract_choice(text: str, num_choices: int) -> str | None:
  """The chosen letter (A.. within `num_choices`) of a multiple-choice response, or None."""
  letters = string.ascii_uppercase[:num_choices]
  region = answer_region(text)
  boxed = extract_answer(region)
  if boxed is not None:
    match = _LETTER_IN_BOX.match(boxed)
    if match and match.group(1).upper() in letters:
      return match.group(1).upper()
  found = [m.group(1) for m in _ANSWER_PHRASE.finditer(region) if m.group(1) in letters]
  return found[-1] if found else None


@functools.lru_cache(maxsize=1 << 16)
def _math_correct(answer: str, gold: str) -> bool:
  return math_equal(answer, gold)  # a population repeats answers: check each distinct one once


def grade(kind: str, problem: Problem, text: str) -> Graded:
  """Grades one response to `problem` of benchmark family `kind`."""
  if kind == "math":
    answer = extract_answer(text)
    return Graded(answer, answer is not None and _math_correct(answer, problem.answer))
  if kind == "multiple_choice":
    answer = extract_choice(text, problem.num_choices)
    return Graded(answer, answer == problem.answer)
  code = extract_code(answer_region(text))
  if code is None:
    return Graded(None, False, "no_code")
  verdict = run_tests(code, problem.tests, fn_name=problem.fn_name, time_limit_s=problem.time_limit_s,
                      memory_mb=problem.memory_mb)
  return Graded(None, verdict.passed, verdict.status)


@functools.lru_cache(maxsize=1 << 16)
def _math_equivalent(a: str, b: str) -> bool:
  return answers_equivalent(a, b)


def equivalence(kind: str) -> Callable[[str, str], bool] | None:
  """How answers of family `kind` are compared for clustering (None: the family has no majority vote)."""
  return {"math": _math_equivalent, "multiple_choice": str.__eq__}.get(kind)


def cluster(answers: Sequence[str | None], equivalent: Callable[[str, str], bool]) -> list[int | None]:
  """Cluster label of every answer (None for no answer): an answer joins the first cluster whose first member
  it is equivalent to, else starts a new one. Identical strings are compared once."""
  representatives: list[str] = []
  label_of: dict[str, int] = {}
  labels = []
  for answer in answers:
    if answer is None:
      labels.append(None)
      continue
    if answer not in label_of:
      label_of[answer] = next((i for i, rep in enumerate(representatives) if equivalent(answer, rep)),
                              len(representatives))
      if label_of[answer] == len(representatives):
        representatives.append(answer)
    labels.append(label_of[answer])
  return labels
