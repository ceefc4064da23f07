"""Rewards and verifiers for post-training RL and evaluation: math answers (Math-Verify), a code sandbox,
RLVE-style procedural environments with a difficulty curriculum, and behavioural-stage shaping."""

from zaya_jax.rewards.behavior import degenerate, format_reward, length_penalty
from zaya_jax.rewards.code import Verdict, code_reward, extract_code, run_tests
from zaya_jax.rewards.envs import ENVIRONMENTS, Curriculum
from zaya_jax.rewards.math import answers_equivalent, extract_answer, math_equal, math_reward

__all__ = ["Curriculum", "ENVIRONMENTS", "Verdict", "answers_equivalent", "code_reward", "degenerate",
           "extract_answer", "extract_code", "format_reward", "length_penalty", "math_equal", "math_reward",
           "run_tests"]
