"""RL prompts and their verifiers: what each stage asks the policy, and how a reply is scored.

A `Task` is one prompt (token ids, left-padded later to the stage's fixed width), the function that scores a
reply text -> (reward, correct), and where it came from (`source`: per-source metrics and the length reward's
best solve rate). Every prompt is one user turn of the checkpoint's chat template. Kinds, weighted by
`config.rewards.mix` (each step's prompts are split between kinds by largest remainder, so every step has the
same composition):

  math      a built-in problem of the train split (zaya_jax/data/corpus.py), asked exactly as the held-out
            evaluation asks it; reward `math_reward` (last \\boxed{}, Math-Verify).
  code      a programming task from `CODE_TEMPLATES` (stdin -> stdout, a few generated tests); reward
            `code_reward` (the last fenced code block passes every test in the sandbox of rewards/code.py).
  envs      a procedurally generated environment (rewards/envs.py `ENVIRONMENTS`) at the difficulty the
            RLVE `Curriculum` picks; reward 1 if the environment's exact checker accepts the reply. The
            curriculum is updated with each group's pass count.
  behavior  a built-in math problem. The report's behavioural stage gates a reward-model score with a binary
            instruction-following checker (fail => 0); here the checker is `format_reward` (rewards/behavior.py:
            exactly one non-empty \\boxed{} answer), the score is the answer's correctness, and DAPO's overlong
            `length_penalty` is added: reward = format_ok · correct + length_penalty(tokens, length_budget).

Aggregation prompts (Markovian RSA, `aggregation_tasks`) wrap a plain prompt's question and the last τ tokens
of C of its rollouts in the aggregation template of zaya_jax/sampling/rsa.py, with that prompt's verifier.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from zaya_jax.data import corpus
from zaya_jax.data.tokenizer import Tokenizer
from zaya_jax.rewards.behavior import format_reward, length_penalty
from zaya_jax.rewards.code import code_reward
from zaya_jax.rewards.envs import ENVIRONMENTS, Curriculum
from zaya_jax.rewards.math import math_reward
from zaya_jax.sampling.chat import ChatTemplate
from zaya_jax.sampling.rsa import PromptBuilder

KINDS = ("math", "code", "envs", "behavior")


class TaskError(ValueError):
  """A prompt that does not fit the stage's prompt width, or a prompt mixture that cannot be built."""


def default_rewards_config() -> ml_collections.ConfigDict:
  """config.rewards of an RL stage: the prompt mixture and each kind's settings."""
  return ml_collections.ConfigDict(dict(
      mix=dict(math=1.0, code=0.0, envs=0.0, behavior=0.0),  # weights of the prompt kinds
      math=dict(families=list(corpus.MATH_FAMILIES), difficulties=[1, 2], seed=0),  # train-split problems
      code=dict(templates=list(CODE_TEMPLATES), tests=3, time_limit_s=2.0, memory_mb=256),  # sandbox limits
      envs=dict(names=[], calibration_groups=0),  # environments of rewards/envs.py ([] = all); Curriculum's
                                                    # calibration phase in groups per environment (0: none)
      behavior=dict(families=list(corpus.MATH_FAMILIES), difficulties=[1, 2], seed=1,
                    length_budget=128),  # replies past 4/5 of the budget lose up to 1
  ))


@dataclasses.dataclass(frozen=True)
class Task:
  """One RL prompt. `score(reply text, reply tokens) -> (reward, correct)`; `question` is the user message
  aggregation prompts are built around (None: not aggregatable); `env` is (environment, difficulty) for
  curriculum prompts."""
  source: str
  ids: tuple[int, ...]
  score: Callable[[str, int], tuple[float, bool]]
  question: str | None = None
  env: tuple[str, int] | None = None


# ---------------------------------------------------------------------------------------------------------
# Verifiers as (reward, correct) functions of the reply text.


def _math_score(gold: str, text: str, num_tokens: int) -> tuple[float, bool]:
  reward = math_reward(text, gold)
  return reward, reward == 1.0


def _code_score(tests: tuple[dict, ...], limits: tuple[tuple[str, float], ...], text: str,
                num_tokens: int) -> tuple[float, bool]:
  reward = code_reward(text, list(tests), **dict(limits))
  return reward, reward == 1.0


def _env_score(name: str, answer: str, text: str, num_tokens: int) -> tuple[float, bool]:
  correct = bool(ENVIRONMENTS[name].check(text, answer))
  return float(correct), correct


def _behavior_score(gold: str, budget: int, text: str, num_tokens: int) -> tuple[float, bool]:
  correct = format_reward(text) == 1.0 and math_reward(text, gold) == 1.0
  return float(correct) + length_penalty(num_tokens, budget), correct


# ---------------------------------------------------------------------------------------------------------
# Programming tasks: statement, input generator, reference solution (stdin text -> expected stdout).


def _ints(rng, n, low, high):
  return [int(v) for v in rng.integers(low, high + 1, size=n)]


def _list_input(rng):
  values = _ints(rng, int(rng.integers(1, 8)), -50, 50)
  return f"{len(values)}\n{' '.join(map(str, values))}\n"


def _fib(n: int) -> int:
  a, b = 0, 1
  for _ in range(n):
    a, b = b, a + b
  return a


def _word(rng):
  return "".join(chr(ord("a") + int(c)) for c in rng.integers(0, 26, size=int(rng.integers(1, 12))))


CODE_TEMPLATES = {
    "sum_two": ("Read two integers a and b from one line and print a + b.",
                lambda rng: "{} {}\n".format(*_ints(rng, 2, -1000, 1000)),
                lambda s: str(sum(map(int, s.split())))),
    "max_list": ("The first line holds n, the second n integers. Print the largest of them.",
                 _list_input, lambda s: str(max(map(int, s.split()[1:])))),
    "sort_list": ("The first line holds n, the second n integers. Print them in increasing order, separated "
                  "by spaces.", _list_input, lambda s: " ".join(map(str, sorted(map(int, s.split()[1:]))))),
    "reverse": ("Read a word and print it reversed.", lambda rng: _word(rng) + "\n", lambda s: s.strip()[::-1]),
    "vowels": ("Read a lowercase word and print how many of its letters are vowels (a, e, i, o, u).",
               lambda rng: _word(rng) + "\n", lambda s: str(sum(c in "aeiou" for c in s.strip()))),
    "factorial": ("Read an integer n (0 <= n <= 12) and print n!.", lambda rng: f"{int(rng.integers(0, 13))}\n",
                  lambda s: str(math.factorial(int(s)))),
    "fibonacci": ("Read n (0 <= n <= 40) and print the n-th Fibonacci number (F(0) = 0, F(1) = 1).",
                  lambda rng: f"{int(rng.integers(0, 41))}\n", lambda s: str(_fib(int(s)))),
    "parity": ("Read an integer and print even if it is even, odd otherwise.",
               lambda rng: f"{int(rng.integers(-10**6, 10**6))}\n", lambda s: "even" if int(s) % 2 == 0 else "odd"),
    "digit_sum": ("Read a non-negative integer and print the sum of its decimal digits.",
                  lambda rng: f"{int(rng.integers(0, 10**9))}\n", lambda s: str(sum(map(int, s.strip())))),
    "gcd": ("Read two positive integers and print their greatest common divisor.",
            lambda rng: "{} {}\n".format(*_ints(rng, 2, 1, 10**6)),
            lambda s: str(math.gcd(*map(int, s.split())))),
}
CODE_INSTRUCTION = ("\nRead the input from standard input and print the answer. Give a complete Python program in a "
                    "```python code block.")


def code_problem(template: str, num_tests: int, rng: np.random.Generator) -> tuple[str, list[dict]]:
  """(prompt text, tests [{"input", "output"}]) of one instance of `CODE_TEMPLATES[template]`."""
  if template not in CODE_TEMPLATES:
    raise TaskError(f"unknown code template {template!r}; known: {sorted(CODE_TEMPLATES)}")
  statement, make_input, solve = CODE_TEMPLATES[template]
  inputs = [make_input(rng) for _ in range(num_tests)]
  return statement + CODE_INSTRUCTION, [{"input": s, "output": solve(s) + "\n"} for s in inputs]


# ---------------------------------------------------------------------------------------------------------
# The per-step prompt draw.


def allocate(total: int, mix: dict[str, float]) -> dict[str, int]:
  """Splits `total` prompts between kinds in proportion to the weights (largest remainder; ties by order)."""
  unknown = sorted(set(mix) - set(KINDS))
  weights = np.asarray([float(mix[k]) for k in mix])
  if unknown or not mix or np.any(weights < 0) or weights.sum() <= 0:
    raise TaskError(f"rewards.mix must give weights >= 0, with a positive sum, to kinds of {KINDS}; got {dict(mix)}")
  exact = total * weights / weights.sum()
  counts = np.floor(exact).astype(int)
  for i in np.argsort(-(exact - counts), kind="stable")[:total - counts.sum()]:
    counts[i] += 1
  return {k: int(c) for k, c in zip(mix, counts) if c}


class TaskSampler:
  """Draws the plain prompts of a step from (step, rng); holds the environment curriculum when `envs` has
  weight (its state is checkpointed through `curriculum_state` / `load_curriculum_state`)."""

  def __init__(self, cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, chat_template: ChatTemplate, *,
               prompt_width: int, group_size: int):
    self.cfg, self.tokenizer, self.chat_template, self.width = cfg, tokenizer, chat_template, prompt_width
    self.curriculum = None
    if cfg.mix.envs > 0:
      names = list(cfg.envs.names) or sorted(ENVIRONMENTS)
      unknown = sorted(set(names) - set(ENVIRONMENTS))
      if unknown:
        raise TaskError(f"unknown environments {unknown}; known: {sorted(ENVIRONMENTS)}")
      self.curriculum = Curriculum(names, group_size=group_size, calibration_groups=cfg.envs.calibration_groups)

  def _task(self, source: str, question: str, score, env=None) -> Task:
    ids = self.chat_template.user_prompt(self.tokenizer, [question])
    if len(ids) > self.width:
      raise TaskError(f"a {source} prompt has {len(ids)} tokens, more than train.prompt_width={self.width}: "
                      f"{question[:80]!r}")
    return Task(source, tuple(ids), score, question, env)

  def _records(self, cfg, step: int, count: int, rng: np.random.Generator) -> list[dict]:
    out = []
    for i in range(count):
      family = cfg.families[int(rng.integers(len(cfg.families)))]
      difficulty = int(cfg.difficulties[int(rng.integers(len(cfg.difficulties)))])
      out.append(corpus.make_record(family, difficulty, cfg.seed, step * count + i, split="train"))
    return out

  def math(self, step: int, count: int, rng: np.random.Generator) -> list[Task]:
    return [self._task("math", r["problem"], functools.partial(_math_score, r["answer"]))
            for r in self._records(self.cfg.math, step, count, rng)]

  def behavior(self, step: int, count: int, rng: np.random.Generator) -> list[Task]:
    budget = self.cfg.behavior.length_budget
    return [self._task("behavior", r["problem"], functools.partial(_behavior_score, r["answer"], budget))
            for r in self._records(self.cfg.behavior, step, count, rng)]

  def code(self, step: int, count: int, rng: np.random.Generator) -> list[Task]:
    c = self.cfg.code
    limits = (("time_limit_s", float(c.time_limit_s)), ("memory_mb", int(c.memory_mb)))
    tasks = []
    for _ in range(count):
      template = c.templates[int(rng.integers(len(c.templates)))]
      question, tests = code_problem(template, c.tests, rng)
      tasks.append(self._task("code", question, functools.partial(_code_score, tuple(tests), limits)))
    return tasks

  def envs(self, step: int, count: int, rng: np.random.Generator) -> list[Task]:
    tasks = []
    for _ in range(count):
      name, difficulty, instance = self.curriculum.sample(rng)
      tasks.append(self._task(f"envs/{name}", instance["prompt"],
                              functools.partial(_env_score, name, instance["answer"]), env=(name, difficulty)))
    return tasks

  def sample(self, step: int, count: int, rng: np.random.Generator) -> list[Task]:
    """`count` plain prompts for `step`, kinds in the order of `rewards.mix`."""
    tasks = []
    for kind, n in allocate(count, self.cfg.mix.to_dict()).items():
      tasks += getattr(self, kind)(step, n, rng)
    return tasks

  def update_curriculum(self, tasks: Sequence[Task], correct_PG: np.ndarray) -> None:
    """Feeds each environment group's pass count (correct [P, G]) to the curriculum."""
    for task, row in zip(tasks, correct_PG):
      if task.env is not None:
        self.curriculum.update(task.env[0], task.env[1], int(row.sum()), len(row))

  def curriculum_state(self) -> dict | None:
    return None if self.curriculum is None else self.curriculum.state_dict()

  def load_curriculum_state(self, state: dict | None) -> None:
    if self.curriculum is not None:
      self.curriculum = Curriculum.from_state_dict(state)


# ---------------------------------------------------------------------------------------------------------
# Markovian RSA aggregation prompts.


def aggregation_width(tokenizer: Tokenizer, chat_template: ChatTemplate, prompt_width: int, candidates: int,
                      tail: int) -> int:
  """The fixed width of aggregation prompts: a question prompt of up to `prompt_width` tokens wrapped in the
  aggregation template with `candidates` tails of `tail` tokens."""
  empty = PromptBuilder(tokenizer, chat_template, "")
  return prompt_width + len(empty.aggregation([[0] * tail] * candidates)) - len(empty.initial())


def aggregation_tasks(tasks: Sequence[Task], tails: Sequence[Sequence[Sequence[int]]], tokenizer: Tokenizer,
                      chat_template: ChatTemplate) -> list[Task]:
  """One aggregation prompt per (task, its C tails): same verifier, source "rsa/<source>"."""
  out = []
  for task, chosen in zip(tasks, tails):
    if task.question is None:
      raise TaskError(f"a {task.source} prompt has no question to aggregate around")
    ids = PromptBuilder(tokenizer, chat_template, task.question).aggregation(chosen)
    out.append(Task(f"rsa/{task.source}", tuple(ids), task.score))
  return out
