"""Procedurally generated environments with exact checkers, and the RLVE difficulty curriculum (spec §5.4).

Each environment draws a problem at an integer difficulty in [0, max_difficulty] from a numpy Generator (so
problems are deterministic given the generator's state) and checks a response by exact string match of its
last `\\boxed{}` answer (`extract_answer`, after `</think>` when present), surrounding whitespace ignored.
Difficulty 0 has answers of one or two characters, within reach of a ~1M-parameter byte-level model after a
little training; each step up lengthens the input (or widens the numbers) by about one item.

`Curriculum` keeps one difficulty per environment and moves it by the RLVE rule: once a group of
`group_size` rollouts at the current difficulty is complete, +1 if its pass rate is above 0.7, -1 if it is 0,
clipped to [0, max_difficulty]; results reported for any other difficulty (stale rollouts) are ignored.
Its sampler picks the least-sampled environment (ties broken at random). Optionally (`calibration_groups`)
each environment's starting difficulty is first calibrated to a 0.5 pass rate by Thompson sampling over
logistic pass-rate curves, as the spec describes (`Curriculum` docstring).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import string
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from zaya_jax.rewards.math import extract_answer

_BOXED = " Give the final answer in \\boxed{}."


@runtime_checkable
class Environment(Protocol):
  """A problem generator with an exact checker."""
  name: str
  max_difficulty: int

  def generate(self, difficulty: int, rng: np.random.Generator) -> dict:
    """{"prompt": str asking for the answer in \\boxed{}, "answer": str}."""

  def check(self, text: str, answer: str) -> bool:
    """Whether the last boxed answer of the response `text` is exactly `answer`."""


@dataclasses.dataclass(frozen=True)
class ProceduralEnvironment:
  """An `Environment` from a function (difficulty, rng) -> (question, answer)."""
  name: str
  max_difficulty: int
  make: Callable[[int, np.random.Generator], tuple[str, str]]

  def generate(self, difficulty: int, rng: np.random.Generator) -> dict:
    if not (isinstance(difficulty, (int, np.integer)) and 0 <= difficulty <= self.max_difficulty):
      raise ValueError(f"{self.name}: difficulty must be an integer in [0, {self.max_difficulty}], got "
                       f"{difficulty!r}")
    question, answer = self.make(int(difficulty), rng)
    return {"prompt": question + _BOXED, "answer": answer}

  def check(self, text: str, answer: str) -> bool:
    boxed = extract_answer(text)
    return boxed is not None and boxed.strip() == answer.strip()


def _digits(rng: np.random.Generator, n: int) -> list[int]:
  return [int(d) for d in rng.integers(0, 10, size=n)]


def _number(rng: np.random.Generator, num_digits: int) -> int:
  """A uniform integer with exactly `num_digits` digits (0..9 for one digit)."""
  low = 0 if num_digits == 1 else 10 ** (num_digits - 1)
  return int(rng.integers(low, 10 ** num_digits))


def _sort_digits(d, rng):
  digits = _digits(rng, d + 2)
  return (f"Sort the digits {' '.join(map(str, digits))} in increasing order and write them without spaces.",
          "".join(map(str, sorted(digits))))


def _count_letter(d, rng):
  alphabet = "abc" if d < 3 else "abcdef"  # a small alphabet keeps the target letter frequent
  word = "".join(rng.choice(list(alphabet), size=3 + 3 * d))
  letter = str(rng.choice(list(alphabet)))
  return f"How many times does the letter {letter} occur in {word}?", str(word.count(letter))


def _digit_sum(d, rng):
  n = _number(rng, d + 2)
  return f"What is the sum of the digits of {n}?", str(sum(map(int, str(n))))


def _reverse_word(d, rng):
  word = "".join(rng.choice(list(string.ascii_lowercase), size=d + 2))
  return f"Write the word {word} backwards.", word[::-1]


def _modulo(d, rng):
  n = _number(rng, d + 2)
  m = int(rng.integers(2, 10 if d < 4 else 100))
  return f"What is the remainder when {n} is divided by {m}?", str(n % m)


def _list_max(d, rng):
  values = [int(v) for v in rng.integers(0, 10 ** (1 + d // 3), size=d + 2)]
  return f"What is the largest number in the list {', '.join(map(str, values))}?", str(max(values))


def _base_convert(d, rng):
  base = 2 if d < 3 else int(rng.integers(2, 10))
  n = int(rng.integers(1, 2 ** (d + 2)))
  digits, rest = [], n
  while rest:
    digits.append(str(rest % base))
    rest //= base
  return f"Write the decimal number {n} in base {base}.", "".join(reversed(digits))


def _gcd(d, rng):
  g = int(rng.integers(1, 3 + d))
  a, b = (g * int(v) for v in rng.integers(1, 4 + 3 * d, size=2))
  return f"What is the greatest common divisor of {a} and {b}?", str(math.gcd(a, b))


ENVIRONMENTS: dict[str, Environment] = {env.name: env for env in (
    ProceduralEnvironment("sort_digits", 9, _sort_digits),
    ProceduralEnvironment("count_letter", 9, _count_letter),
    ProceduralEnvironment("digit_sum", 9, _digit_sum),
    ProceduralEnvironment("reverse_word", 9, _reverse_word),
    ProceduralEnvironment("modulo", 9, _modulo),
    ProceduralEnvironment("list_max", 9, _list_max),
    ProceduralEnvironment("base_convert", 9, _base_convert),
    ProceduralEnvironment("gcd", 9, _gcd),
)}


_SCALES = (0.5, 1.0, 2.0, 4.0)  # logistic slopes s of the calibration hypotheses
_MU_STEP, _MU_MARGIN = 0.5, 2.0  # the 50%-difficulties mu: a grid over [-2, max_difficulty + 2]


def _hypotheses(max_difficulty: int) -> np.ndarray:
  """[M, 2] (mu, s) pairs of the pass-rate curves p(d) = sigmoid(-(d - mu) / s) the calibration weighs."""
  mus = np.arange(-_MU_MARGIN, max_difficulty + _MU_MARGIN + _MU_STEP / 2, _MU_STEP)
  return np.array([(mu, s) for mu in mus for s in _SCALES])


def _posterior(log_weights: Sequence[float]) -> np.ndarray:
  w = np.exp(np.asarray(log_weights) - np.max(log_weights))
  return w / w.sum()


class Curriculum:
  """Per-environment difficulty under the RLVE rule, with an optional calibration phase; checkpointable.

  With `calibration_groups` > 0 each environment first spends that many groups' worth of rollouts
  calibrating its starting difficulty (spec §5.4): Thompson sampling over a grid of logistic pass-rate curves
  p(d) = sigmoid(-(d - mu) / s), each draw asking for d = mu + s log((1 - p*) / p*) with p* = 0.5, or with
  probability `epsilon` p* uniform in [0.25, 0.75]; results update the posterior with the binomial likelihood
  of k correct of n at the d they were drawn at. The difficulty then starts at the posterior mean of mu
  (where p = 0.5), rounded and clipped, and follows the RLVE rule (module docstring).
  """

  RAISE_ABOVE = 0.7  # pass rate above which the difficulty goes up
  _PER_ENV = ("difficulty", "sampled", "pending", "calibrating", "log_weights")  # the per-environment state

  def __init__(self, names: Sequence[str] | None = None, *, start_difficulty: int = 0, group_size: int = 16,
               calibration_groups: int = 0, epsilon: float = 0.1):
    names = sorted(ENVIRONMENTS) if names is None else list(names)
    unknown = sorted(set(names) - set(ENVIRONMENTS))
    if not names or unknown or len(set(names)) != len(names):
      raise ValueError(f"names must be distinct environments of {sorted(ENVIRONMENTS)}, got {names}")
    if group_size < 1 or calibration_groups < 0 or not 0 <= epsilon <= 1:
      raise ValueError(f"need group_size >= 1, calibration_groups >= 0 and 0 <= epsilon <= 1, got {group_size}, "
                       f"{calibration_groups}, {epsilon}")
    for name in names:
      if not 0 <= start_difficulty <= ENVIRONMENTS[name].max_difficulty:
        raise ValueError(f"start_difficulty {start_difficulty} is outside [0, {ENVIRONMENTS[name].max_difficulty}] "
                         f"for {name}")
    self.names = names
    self.group_size = group_size
    self.epsilon = epsilon
    self.difficulty = {name: start_difficulty for name in names}
    self.sampled = {name: 0 for name in names}
    self.pending = {name: [0, 0] for name in names}  # [correct, total] at the current difficulty
    # Rollouts still to see before calibration ends, and the log-weights of _hypotheses (a uniform prior).
    self.calibrating = {name: calibration_groups * group_size for name in names}
    self.log_weights = {name: [0.0] * len(_hypotheses(ENVIRONMENTS[name].max_difficulty)) for name in names}

  def sample(self, rng: np.random.Generator) -> tuple[str, int, dict]:
    """(environment name, difficulty, a problem from it); the least-sampled environment first. The difficulty
    is the environment's current one, or a Thompson draw while it calibrates."""
    fewest = min(self.sampled.values())
    candidates = [name for name in self.names if self.sampled[name] == fewest]
    name = candidates[int(rng.integers(len(candidates)))]
    self.sampled[name] += 1
    difficulty = self._thompson(name, rng) if self.calibrating[name] > 0 else self.difficulty[name]
    return name, difficulty, ENVIRONMENTS[name].generate(difficulty, rng)

  def _thompson(self, name: str, rng: np.random.Generator) -> int:
    max_difficulty = ENVIRONMENTS[name].max_difficulty
    mu, s = _hypotheses(max_difficulty)[rng.choice(len(self.log_weights[name]), p=_posterior(self.log_weights[name]))]
    target = rng.uniform(0.25, 0.75) if rng.random() < self.epsilon else 0.5
    return int(np.clip(np.rint(mu + s * np.log((1 - target) / target)), 0, max_difficulty))

  def update(self, env_name: str, difficulty: int, num_correct: int, num_total: int) -> None:
    """Adds rollout results for `env_name` at `difficulty`; moves the difficulty once a group is complete."""
    if env_name not in self.difficulty:
      raise KeyError(f"unknown environment {env_name!r}; this curriculum has {self.names}")
    if not 0 <= num_correct <= num_total:
      raise ValueError(f"need 0 <= num_correct <= num_total, got {num_correct} of {num_total}")
    max_difficulty = ENVIRONMENTS[env_name].max_difficulty
    if self.calibrating[env_name] > 0:
      mu, s = _hypotheses(max_difficulty).T
      z = (difficulty - mu) / s  # log p = -log(1 + e^z), log(1 - p) = -log(1 + e^-z)
      log_likelihood = -num_correct * np.logaddexp(0, z) - (num_total - num_correct) * np.logaddexp(0, -z)
      self.log_weights[env_name] = (np.asarray(self.log_weights[env_name]) + log_likelihood).tolist()
      self.calibrating[env_name] = max(0, self.calibrating[env_name] - num_total)
      if self.calibrating[env_name] == 0:
        mean_mu = float(_posterior(self.log_weights[env_name]) @ mu)
        self.difficulty[env_name] = int(np.clip(np.rint(mean_mu), 0, max_difficulty))
      return
    if difficulty != self.difficulty[env_name]:
      return
    pending = self.pending[env_name]
    pending[0] += num_correct
    pending[1] += num_total
    if pending[1] < self.group_size:
      return
    rate = pending[0] / pending[1]
    step = 1 if rate > self.RAISE_ABOVE else -1 if rate == 0 else 0
    self.difficulty[env_name] = min(max(difficulty + step, 0), max_difficulty)
    self.pending[env_name] = [0, 0]

  def state_dict(self) -> dict:
    """A JSON-serialisable copy of the whole state (`from_state_dict` restores it exactly)."""
    return {"names": list(self.names), "group_size": self.group_size, "epsilon": self.epsilon,
            **{field: {name: copy.copy(getattr(self, field)[name]) for name in self.names} for field in self._PER_ENV}}

  @classmethod
  def from_state_dict(cls, state: dict) -> Curriculum:
    """The curriculum saved by `state_dict`."""
    try:
      curriculum = cls(state["names"], group_size=state["group_size"], epsilon=state["epsilon"])
      for field in cls._PER_ENV:
        if set(state[field]) != set(curriculum.names):
          raise ValueError(f"{field} has environments {sorted(state[field])}, expected {curriculum.names}")
      for name in curriculum.names:
        if not 0 <= state["difficulty"][name] <= ENVIRONMENTS[name].max_difficulty:
          raise ValueError(f"difficulty {state['difficulty'][name]} of {name} is out of range")
        if len(state["log_weights"][name]) != len(curriculum.log_weights[name]):
          raise ValueError(f"log_weights of {name} has {len(state['log_weights'][name])} entries, expected "
                           f"{len(curriculum.log_weights[name])}")
        curriculum.difficulty[name] = int(state["difficulty"][name])
        curriculum.sampled[name] = int(state["sampled"][name])
        curriculum.pending[name] = [int(v) for v in state["pending"][name]]
        curriculum.calibrating[name] = int(state["calibrating"][name])
        curriculum.log_weights[name] = [float(v) for v in state["log_weights"][name]]
    except (KeyError, TypeError) as e:
      raise ValueError(f"not a Curriculum state dict ({e!r}): {state!r:.200}") from e
    return curriculum
