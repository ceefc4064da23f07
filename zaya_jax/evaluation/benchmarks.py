"""Benchmarks: JSONL schemas and loaders, the published ZAYA1-8B numbers, and the built-in toy benchmark.

Nothing is downloaded: a benchmark is a JSONL file the user provides, one problem per line, in the schema of
its family. Every line needs an "id" (string or integer, unique in the file) and a "problem" (string); fields
not listed are ignored.

  math (AIME'25/'26, HMMT Feb'25/'26, APEX-shortlist, IMO-AnswerBench):
    {"id": "2025-I-1", "problem": "Find the sum of ...", "answer": "70"}
    answer: string (LaTeX allowed, e.g. "\\frac{3}{4}") or integer.
  multiple_choice (GPQA-Diamond):
    {"id": "q1", "problem": "Which ...?", "choices": ["...", "...", "...", "..."], "answer": "C"}
    choices: 2..26 non-empty strings, shown as A), B), ...; answer: the correct letter.
  code (LiveCodeBench-v6):
    {"id": "abc301_a", "problem": "...", "tests": [{"input": "3\\n1 2 3\\n", "output": "6\\n"}, ...],
     "public_tests": [...], "fn_name": "maxProfit", "starter_code": "class Solution: ...",
     "time_limit_s": 6, "memory_mb": 512}
    tests: the hidden tests (at least one); public_tests (optional): the statement's examples. Like
    LiveCodeBench, a sample is correct only if every public and hidden test passes. Without fn_name a program
    reads stdin and writes stdout; with it the tests are call-based (`zaya_jax.rewards.code` documents both
    formats). time_limit_s (default 6) is per test, memory_mb (default 512) per run.

The question shown to the model is the problem plus the family's instruction (`instruction_for`): the usual
"reason step by step ... \\boxed{}" for math (spec §6.1), choices and a boxed letter for multiple choice, and
a condensed LiveCodeBench prompt for code. The built-in toy benchmark (`toy_problems`) asks held-out problems
of the training corpus as they appear there, without an instruction (the toy models learned the format).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from typing import Any

from zaya_jax.data import corpus, sources

KINDS = ("math", "multiple_choice", "code")
DEFAULT_TIME_LIMIT_S = 6.0
DEFAULT_MEMORY_MB = 512


class BenchmarkError(ValueError):
  """An unknown benchmark or a malformed benchmark file (the message names the file and line)."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One benchmark item. `question` is the full user message (instruction included); `answer` is the gold
  answer (math) or letter (multiple choice), None for code; `tests` are every graded test (code)."""
  id: str
  question: str
  answer: str | None = None
  num_choices: int = 0
  tests: tuple[dict, ...] = ()
  fn_name: str | None = None
  time_limit_s: float = DEFAULT_TIME_LIMIT_S
  memory_mb: int = DEFAULT_MEMORY_MB
  tags: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
  """A named benchmark: its schema family and the presets its published numbers use."""
  name: str
  title: str
  kind: str
  single_preset: str
  rsa_preset: str = "rsa_16k"


BENCHMARKS = {spec.name: spec for spec in (
    BenchmarkSpec("aime25", "AIME'25", "math", "single_avg64"),
    BenchmarkSpec("aime26", "AIME'26", "math", "single_avg64"),
    BenchmarkSpec("hmmt_feb25", "HMMT Feb'25", "math", "single_avg64"),
    BenchmarkSpec("hmmt_feb26", "HMMT Feb'26", "math", "single_avg64"),
    BenchmarkSpec("apex_shortlist", "APEX-shortlist", "math", "single_avg64"),
    BenchmarkSpec("imo_answerbench", "IMO-AnswerBench", "math", "single_avg64"),
    BenchmarkSpec("lcb_v6", "LiveCodeBench-v6 (2025-02..05)", "code", "single_avg16_code"),
    BenchmarkSpec("gpqa_diamond", "GPQA-Diamond", "multiple_choice", "single_avg16"),
    # Any other benchmark in one of the three schemas (no published numbers to compare with).
    BenchmarkSpec("math", "math (custom)", "math", "single_avg64"),
    BenchmarkSpec("multiple_choice", "multiple choice (custom)", "multiple_choice", "single_avg16"),
    BenchmarkSpec("code", "code (custom)", "code", "single_avg16_code"),
    BenchmarkSpec("toy", "toy (built-in held-out problems)", "math", "toy_single", "toy_rsa"),
)}


def get_benchmark(name: str) -> BenchmarkSpec:
  """The registered benchmark `name` (BenchmarkError naming the known ones otherwise)."""
  if name not in BENCHMARKS:
    raise BenchmarkError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
  return BENCHMARKS[name]


@dataclasses.dataclass(frozen=True)
class Published:
  """A ZAYA1-8B score from the report (spec §4.4), in percent, for a benchmark under a preset; `tokens`: the
  reported generated tokens per problem where given."""
  benchmark: str
  preset: str
  score: float
  source: str
  tokens: float | None = None


_XI = "report Table XI (pre-behavioral checkpoint)"
_XII = "report Table XII (pre-behavioral checkpoint)"
_XIII = "report Table XIII"
_VII = "report Table VII (final checkpoint)"
PUBLISHED = (
    Published("aime25", "single_avg64", 88.3, _XI),
    Published("aime25", "markovian_c1", 82.1, _XII),
    Published("aime25", "rsa_8k", 86.5, _XII),
    Published("aime25", "rsa_16k", 88.8, _XII, tokens=440e3),
    Published("aime25", "rsa_40k", 91.9, _XII, tokens=740e3),
    Published("aime25", "rsa_40k_tail8k", 90.8, _XII),
    Published("hmmt_feb25", "single_avg64", 82.7, _XI),
    Published("hmmt_feb25", "markovian_c1", 75.0, _XII),
    Published("hmmt_feb25", "rsa_8k", 80.8, _XII),
    Published("hmmt_feb25", "rsa_16k", 87.1, _XII, tokens=440e3),
    Published("hmmt_feb25", "rsa_40k", 89.6, _XII, tokens=740e3),
    Published("hmmt_feb25", "rsa_40k_tail8k", 89.2, _XII),
    Published("lcb_v6", "single_avg16_code", 65.0, _XI),
    Published("lcb_v6", "single_avg16_code", 64.8, _VII),
    Published("lcb_v6", "rsa_40k", 69.2, _XI),
    Published("aime26", "single_avg64", 89.1, _VII),
    Published("hmmt_feb26", "single_avg64", 71.6, _VII),
    Published("imo_answerbench", "single_avg64", 59.3, _VII),
    Published("apex_shortlist", "single_avg64", 32.2, _XIII),
    Published("apex_shortlist", "rsa_8k", 33.3, _XIII + " (light)"),
    Published("apex_shortlist", "apex_high", 46.1, _XIII + " (high)"),
    Published("apex_shortlist", "apex_extra_high", 51.8, _XIII + " (extra-high)", tokens=5.5e6),
    Published("gpqa_diamond", "single_avg16", 71.0, _VII),
)


def published(benchmark: str, preset: str) -> list[Published]:
  """The report's ZAYA1-8B numbers for `benchmark` under `preset` (empty if it reports none)."""
  return [p for p in PUBLISHED if p.benchmark == benchmark and p.preset == preset]


# ---------------------------------------------------------------------------------------------------------
# Prompts and loading.

_MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
_CHOICE_INSTRUCTION = ("Think step by step, then give the letter of the correct choice within \\boxed{}, "
                       "e.g. \\boxed{A}.")
_CODE_INTRO = ("You will be given a question (problem specification) and will generate a correct Python program "
               "that matches the specification and passes all tests.\n\nQuestion:\n")
_CODE_STARTER = ("Use the following starter code to write the solution to the problem and enclose your code "
                 "within delimiters.\n```python\n{starter}\n```")
_CODE_STDIO = ("Read the inputs from stdin, solve the problem and write the answer to stdout (do not test "
               "directly on the sample inputs). Enclose your code within delimiters as follows.\n"
               "```python\n# YOUR CODE HERE\n```")


def instruction_for(kind: str, record: dict) -> str:
  """The question the model sees for a validated `record` of family `kind`."""
  problem = record["problem"]
  if kind == "math":
    return f"{problem}\n\n{_MATH_INSTRUCTION}"
  if kind == "multiple_choice":
    choices = "\n".join(f"{letter}) {choice}" for letter, choice in zip(string.ascii_uppercase, record["choices"]))
    return f"{problem}\n\n{choices}\n\n{_CHOICE_INSTRUCTION}"
  starter = record.get("starter_code")
  fmt = _CODE_STARTER.format(starter=starter) if starter else _CODE_STDIO
  return f"{_CODE_INTRO}{problem}\n\n{fmt}"


def _field(record: dict, name: str, types, where: str, *, required: bool = True):
  if name not in record:
    if required:
      raise BenchmarkError(f"{where}: missing field {name!r}")
    return None
  value = record[name]
  if isinstance(value, bool) or not isinstance(value, types):
    names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
    raise BenchmarkError(f"{where}: field {name!r} must be {names}, got {type(value).__name__} {value!r:.60}")
  return value


def _tests(record: dict, name: str, where: str, *, required: bool) -> list[dict]:
  tests = _field(record, name, list, where, required=required) or []
  if required and not tests:
    raise BenchmarkError(f"{where}: field {name!r} must hold at least one test")
  for i, test in enumerate(tests):
    if not (isinstance(test, dict) and isinstance(test.get("input"), str) and isinstance(test.get("output"), str)):
      raise BenchmarkError(f"{where}: {name}[{i}] must be {{\"input\": str, \"output\": str}}, got {test!r:.80}")
  return tests


def parse_record(record: Any, kind: str, where: str) -> Problem:
  """A validated Problem from one decoded JSONL line; `where` ("file:line") prefixes every error."""
  if kind not in KINDS:
    raise BenchmarkError(f"unknown benchmark family {kind!r}; known: {KINDS}")
  if not isinstance(record, dict):
    raise BenchmarkError(f"{where}: a line must be a JSON object, got {type(record).__name__}")
  pid = str(_field(record, "id", (str, int), where))
  if not _field(record, "problem", str, where).strip():
    raise BenchmarkError(f"{where}: field 'problem' is empty")
  if kind == "math":
    answer = str(_field(record, "answer", (str, int), where))
    if not answer.strip():
      raise BenchmarkError(f"{where}: field 'answer' is empty")
    return Problem(pid, instruction_for(kind, record), answer)
  if kind == "multiple_choice":
    choices = _field(record, "choices", list, where)
    if not 2 <= len(choices) <= 26 or not all(isinstance(c, str) and c.strip() for c in choices):
      raise BenchmarkError(f"{where}: field 'choices' must hold 2..26 non-empty strings, got {choices!r:.80}")
    answer = _field(record, "answer", str, where).strip().upper()
    letters = string.ascii_uppercase[:len(choices)]
    if len(answer) != 1 or answer not in letters:
      raise BenchmarkError(f"{where}: field 'answer' must be one of the letters {letters}, got {record['answer']!r}")
    return Problem(pid, instruction_for(kind, record), answer, num_choices=len(choices))
  tests = _tests(record, "public_tests", where, required=False) + _tests(record, "tests", where, required=True)
  fn_name = _field(record, "fn_name", str, where, required=False)
  _field(record, "starter_code", str, where, required=False)
  time_limit = _field(record, "time_limit_s", (int, float), where, required=False) or DEFAULT_TIME_LIMIT_S
  memory = _field(record, "memory_mb", int, where, required=False) or DEFAULT_MEMORY_MB
  if time_limit <= 0 or memory <= 0:
    raise BenchmarkError(f"{where}: time_limit_s and memory_mb must be positive, got {time_limit}, {memory}")
  return Problem(pid, instruction_for(kind, record), tests=tuple(tests), fn_name=fn_name or None,
                 time_limit_s=float(time_limit), memory_mb=memory)


def load_problems(path: str, kind: str) -> list[Problem]:
  """The problems of a JSONL file in the schema of family `kind` (module docstring); blank lines skipped."""
  problems, seen = [], {}
  for where, number, record in sources.iter_jsonl(path, BenchmarkError):
    problem = parse_record(record, kind, where)
    if problem.id in seen:
      raise BenchmarkError(f"{where}: id {problem.id!r} already used on line {seen[problem.id]}")
    seen[problem.id] = number
    problems.append(problem)
  if not problems:
    raise BenchmarkError(f"{path}: no problems")
  return problems


def toy_problems(*, families: Sequence[str] = corpus.MATH_FAMILIES, difficulties: Sequence[int] = (1, 2),
                 count: int = 5, seed: int = 0) -> list[Problem]:
  """`count` held-out problems of the built-in corpus per (family, difficulty), tagged with both."""
  if count < 1:
    raise BenchmarkError(f"count must be >= 1, got {count}")
  problems = []
  for family in families:
    for difficulty in difficulties:
      for index in range(count):
        record = corpus.make_record(family, difficulty, seed, index, split="heldout")
        problems.append(Problem(record["id"], record["problem"], record["answer"],
                                tags={"family": family, "difficulty": difficulty}))
  return problems
