"""Procedural environments (answers recomputed by brute force from the prompt) and the RLVE curriculum."""

import json
import re

import numpy as np
import pytest

from zaya_jax.rewards import ENVIRONMENTS, Curriculum
from zaya_jax.rewards import envs
from zaya_jax.rewards.envs import Environment


def _ints(text):
  return [int(v) for v in re.findall(r"\d+", text)]


def _solve(name: str, prompt: str) -> str:
  """An independent solver that reads the problem back from its prompt."""
  question = prompt.split(" Give the final answer")[0]
  if name == "sort_digits":
    return "".join(sorted(question.split("digits ")[1].split(" in increasing")[0].split()))
  if name == "count_letter":
    letter, word = re.match(r"How many times does the letter (\w) occur in (\w+)\?", question).groups()
    return str(sum(c == letter for c in word))
  if name == "digit_sum":
    return str(sum(int(c) for c in str(_ints(question)[0])))
  if name == "reverse_word":
    return re.match(r"Write the word (\w+) backwards", question).group(1)[::-1]
  if name == "modulo":
    n, m = _ints(question)
    return str(n - m * (n // m))
  if name == "list_max":
    return str(max(_ints(question)))
  if name == "base_convert":
    n, base = _ints(question)
    return np.base_repr(n, base)
  if name == "gcd":
    a, b = _ints(question)
    return str(max(k for k in range(1, min(a, b) + 1) if a % k == 0 and b % k == 0))
  raise AssertionError(f"no solver for {name}")


def test_environments_are_correct_deterministic_and_scale_with_difficulty():
  assert len(ENVIRONMENTS) >= 6
  for name, env in ENVIRONMENTS.items():
    assert isinstance(env, Environment) and env.name == name
    for difficulty in range(env.max_difficulty + 1):
      rng = np.random.default_rng([difficulty, 7])
      problems = [env.generate(difficulty, rng) for _ in range(20)]
      again = np.random.default_rng([difficulty, 7])
      assert problems == [env.generate(difficulty, again) for _ in range(20)]
      for problem in problems:
        assert "\\boxed{}" in problem["prompt"]
        assert problem["answer"] == _solve(name, problem["prompt"]), (name, difficulty, problem)
      if difficulty == 0:  # within reach of a tiny model: answers of one or two characters
        assert max(len(p["answer"]) for p in problems) <= 2, (name, problems)
    rng = np.random.default_rng(0)
    easy = np.mean([len(env.generate(0, rng)["prompt"]) for _ in range(50)])
    hard = np.mean([len(env.generate(env.max_difficulty, rng)["prompt"]) for _ in range(50)])
    assert hard > easy, name  # larger inputs at higher difficulty
    with pytest.raises(ValueError, match=name):
      env.generate(env.max_difficulty + 1, rng)


def test_check_is_exact_on_the_last_boxed_answer():
  env = ENVIRONMENTS["reverse_word"]
  assert env.check("so \\boxed{ olleh }", "olleh")
  assert env.check("<think>\\boxed{x}</think> \\boxed{olleh}", "olleh")
  assert not env.check("\\boxed{olleh} wait, \\boxed{Olleh}", "olleh")
  assert not env.check("olleh", "olleh")
  assert not env.check("<think>\\boxed{olleh}</think> none", "olleh")
  assert ENVIRONMENTS["digit_sum"].check("\\boxed{12}", "12") and not ENVIRONMENTS["digit_sum"].check(
      "\\boxed{12.0}", "12")


def _simulate(curriculum, groups):
  """Feeds (env, pass rate) groups; returns the difficulties after each."""
  out = []
  for name, rate in groups:
    d = curriculum.difficulty[name]
    curriculum.update(name, d, int(round(rate * 4)), 4)
    out.append(curriculum.difficulty[name])
  return out


def test_curriculum_rule():
  c = Curriculum(["gcd", "modulo"], start_difficulty=1, group_size=4)
  # > 0.7 goes up, exactly 0.75 counts, 0.5 stays, 0 goes down, clipped at 0.
  assert _simulate(c, [("gcd", 1.0), ("gcd", 0.75), ("gcd", 0.5), ("gcd", 0.0), ("gcd", 0.0), ("gcd", 0.0),
                       ("gcd", 0.0)]) == [2, 3, 3, 2, 1, 0, 0]
  assert c.difficulty["modulo"] == 1
  top = ENVIRONMENTS["modulo"].max_difficulty
  c.difficulty["modulo"] = top
  assert _simulate(c, [("modulo", 1.0)]) == [top]  # clipped at the maximum
  # Stale results (another difficulty) are ignored; a group is complete only after group_size rollouts.
  c = Curriculum(["gcd"], group_size=8)
  c.update("gcd", 3, 4, 4)
  c.update("gcd", 0, 3, 4)
  assert c.difficulty["gcd"] == 0 and c.pending["gcd"] == [3, 4]
  c.update("gcd", 0, 3, 4)  # 6 of 8 = 0.75 > 0.7
  assert c.difficulty["gcd"] == 1 and c.pending["gcd"] == [0, 0]
  with pytest.raises(KeyError):
    c.update("modulo", 0, 1, 4)
  with pytest.raises(ValueError):
    c.update("gcd", 1, 5, 4)
  with pytest.raises(ValueError):
    Curriculum(["nope"])


def test_curriculum_samples_the_least_sampled_environment():
  c = Curriculum()
  rng = np.random.default_rng(0)
  draws = [c.sample(rng) for _ in range(3 * len(ENVIRONMENTS))]
  for round_ in range(3):  # every environment once per round, in random order
    names = [name for name, _, _ in draws[round_ * len(ENVIRONMENTS):(round_ + 1) * len(ENVIRONMENTS)]]
    assert sorted(names) == sorted(ENVIRONMENTS)
  assert [name for name, _, _ in draws[:len(ENVIRONMENTS)]] != sorted(ENVIRONMENTS)
  name, difficulty, problem = draws[0]
  assert difficulty == 0 and set(problem) == {"prompt", "answer"}


def test_curriculum_state_round_trips_through_json_and_resumes_exactly():
  def run(curriculum, rng, steps):
    out = []
    for _ in range(steps):
      name, difficulty, problem = curriculum.sample(rng)
      correct = int(rng.integers(0, 5)) if difficulty < 3 else 0
      curriculum.update(name, difficulty, correct, 4)
      out.append((name, difficulty, problem["prompt"]))
    return out

  def make():  # one calibration group each, then the RLVE rule; the resume point falls in both phases
    return Curriculum(group_size=8, calibration_groups=1)

  full = run(make(), np.random.default_rng(1), 60)
  c, rng = make(), np.random.default_rng(1)
  first = run(c, rng, 12)
  assert 0 < sum(v > 0 for v in c.calibrating.values()) < len(ENVIRONMENTS)
  state = json.loads(json.dumps(c.state_dict()))
  rng_state = json.loads(json.dumps(rng.bit_generator.state))
  resumed_rng = np.random.default_rng()
  resumed_rng.bit_generator.state = rng_state
  assert first + run(Curriculum.from_state_dict(state), resumed_rng, 48) == full
  assert max(d for _, d, _ in full) > 0  # the run did move difficulties
  with pytest.raises(ValueError, match="state dict"):
    Curriculum.from_state_dict({"names": ["gcd"]})
  bad = Curriculum(["gcd"]).state_dict() | {"difficulty": {"gcd": 99}}
  with pytest.raises(ValueError, match="out of range"):
    Curriculum.from_state_dict(bad)


def _sigmoid_pass_rate(d, mu, s):
  return 1.0 / (1.0 + np.exp((d - mu) / s))


def test_calibration_posterior_is_the_binomial_likelihood():
  c = Curriculum(["gcd"], group_size=4, calibration_groups=3)
  c.update("gcd", 2, 3, 4)
  c.update("gcd", 6, 1, 4)
  hypotheses = envs._hypotheses(ENVIRONMENTS["gcd"].max_difficulty)
  for i in (0, 7, len(hypotheses) // 2, len(hypotheses) - 1):
    mu, s = hypotheses[i]
    p2, p6 = _sigmoid_pass_rate(2, mu, s), _sigmoid_pass_rate(6, mu, s)
    expected = 3 * np.log(p2) + np.log(1 - p2) + np.log(p6) + 3 * np.log(1 - p6)
    assert c.log_weights["gcd"][i] == pytest.approx(expected, rel=1e-9, abs=1e-9)
  assert c.calibrating["gcd"] == 4 and c.difficulty["gcd"] == 0


@pytest.mark.parametrize("true_mu", [1.0, 4.0, 7.0])
def test_calibration_finds_the_half_pass_difficulty(true_mu):
  rng = np.random.default_rng(int(true_mu))
  c = Curriculum(["list_max"], group_size=16, calibration_groups=12)
  seen = []
  while c.calibrating["list_max"]:
    name, d, _ = c.sample(rng)
    seen.append(d)
    c.update(name, d, int(rng.binomial(16, _sigmoid_pass_rate(d, true_mu, 1.0))), 16)
  assert abs(c.difficulty["list_max"] - true_mu) <= 1, (seen, c.difficulty)
  assert len(set(seen)) > 1  # it explored
  d = c.difficulty["list_max"]
  c.update("list_max", d, 16, 16)  # then the RLVE rule applies
  assert c.difficulty["list_max"] == d + 1
