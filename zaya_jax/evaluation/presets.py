"""The ZAYA1-8B report's generation settings as named presets (spec §4.3-4.4), plus small toy ones.

K means 1024 tokens (16K = 16384). Single-rollout presets sample k independent responses per problem and
score avg@k; their length cap is the 40K final-response budget the report uses for its non-TTC run (the
cap of the single-rollout table itself is not published). Markovian RSA presets: T aggregation rounds after
round 0, population N, C candidate tails per aggregation prompt, per-rollout budget β, tail τ, and a 40K
budget for the final round; temperature 1.0, top-p 1.0; the score is the mean correctness of the N final
candidates. The report states the 40K final budget for Table XII; APEX's high / extra-high rows (Table XIII)
are taken to use it too.
"""

from __future__ import annotations

import dataclasses

from zaya_jax.sampling import RSAConfig, Sampling

K = 1024
MODES = ("single", "rsa")


class PresetError(ValueError):
  """An unknown preset or inconsistent preset settings."""


@dataclasses.dataclass(frozen=True)
class Preset:
  """A generation setting. samples: k rollouts per problem (single) or population N (rsa), the samples scored
  per problem in both; budget: new tokens per rollout (β for rsa); final_budget: the last round's (rsa)."""
  name: str
  mode: str
  samples: int
  budget: int
  sampling: Sampling
  description: str
  candidates: int = 1
  rounds: int = 0
  tail: int = 0
  final_budget: int | None = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise PresetError(f"preset {self.name!r}: mode must be one of {MODES}, got {self.mode!r}")
    if self.mode == "single" and (self.rounds or self.candidates != 1 or self.final_budget is not None):
      raise PresetError(f"preset {self.name!r}: a single-rollout preset has no rounds, candidates or final budget")
    self.rsa_config()  # range checks

  def rsa_config(self, **rsa_fields) -> RSAConfig:
    """The RSAConfig that runs this preset (single rollout = T=0: N independent samples)."""
    if self.mode == "single":
      return RSAConfig(population=self.samples, candidates=1, rounds=0, budget=self.budget, tail=self.budget,
                       sampling=self.sampling, **rsa_fields)
    return RSAConfig(population=self.samples, candidates=self.candidates, rounds=self.rounds, budget=self.budget,
                     tail=self.tail, final_budget=self.final_budget, sampling=self.sampling, **rsa_fields)

  def describe(self) -> str:
    """Short settings string, e.g. 'T=2 N=16 C=4 β=16384 τ=4096 final=40960' or 'k=64 max 40960'."""
    if self.mode == "single":
      return f"k={self.samples} max {self.budget}"
    final = f" final={self.final_budget}" if self.final_budget else ""
    return f"T={self.rounds} N={self.samples} C={self.candidates} β={self.budget} τ={self.tail}{final}"


_MATH = Sampling(temperature=1.0, top_p=0.95)  # report Table VII: math, knowledge and instruction following
_CODE = Sampling(temperature=0.6, top_p=0.95, top_k=20)  # report Table VII: code
_RSA = Sampling(temperature=1.0, top_p=1.0)  # report §V-A / Table XII


def _rsa(name, rounds, samples, candidates, budget, tail, description):
  return Preset(name, "rsa", samples, budget, _RSA, description, candidates, rounds, tail, 40 * K)


PRESETS = {p.name: p for p in (
    Preset("single_avg64", "single", 64, 40 * K, _MATH, "math single rollout, avg@64"),
    Preset("single_avg16", "single", 16, 40 * K, _MATH, "knowledge (GPQA) single rollout, avg@16"),
    Preset("single_avg16_code", "single", 16, 40 * K, _CODE, "code single rollout, avg@16"),
    _rsa("markovian_c1", 4, 16, 1, 8 * K, 4 * K, "Markovian baseline: own-tail continuation, no aggregation"),
    _rsa("rsa_8k", 2, 16, 4, 8 * K, 4 * K, "Markovian RSA 8K/4K (APEX 'light')"),
    _rsa("rsa_16k", 2, 16, 4, 16 * K, 4 * K, "Markovian RSA 16K/4K (deployment default)"),
    _rsa("rsa_40k", 2, 16, 4, 40 * K, 4 * K, "Markovian RSA 40K/4K (headline)"),
    _rsa("rsa_40k_tail8k", 2, 16, 4, 40 * K, 8 * K, "Markovian RSA 40K/8K"),
    _rsa("apex_high", 8, 16, 4, 16 * K, 4 * K, "Markovian RSA, APEX 'high'"),
    _rsa("apex_extra_high", 8, 32, 4, 32 * K, 4 * K, "Markovian RSA, APEX 'extra-high'"),
    # Toy scale: the built-in corpus' solutions at difficulty <= 3 fit in 256 byte tokens; C=4 tails of 32
    # tokens (the last step and the boxed answer) as in the aggregation examples of configs/posttrain/sft.py.
    Preset("toy_single", "single", 8, 256, _RSA, "toy single rollout, avg@8"),
    Preset("toy_rsa", "rsa", 8, 256, _RSA, "toy Markovian RSA", candidates=4, rounds=2, tail=32),
)}


def get_preset(name: str) -> Preset:
  """The registered preset `name` (PresetError naming the known ones otherwise)."""
  if name not in PRESETS:
    raise PresetError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name]
