"""The pretraining data config: named sources, phases with per-phase mixtures, and held-out eval sources.

Structure (plain dicts or an `ml_collections.ConfigDict` with these exact keys):

    tokenizer:        "byte" or a tokenizer.json path (see `tokenizer.load_tokenizer`)
    sources:          {name: source spec}            # spec format: `sources.make_source`
    phases:           [{"name": str, "steps": int > 0, "seq_len": int > 0,
                        "mixture": {source name: weight >= 0}}, ...]   # run in order
    eval_sources:     {name: source spec}            # held-out documents for `make_eval_batches`
    num_packing_bins: int > 0                        # rows packed at once (first-fit); more = denser
    shuffle:          bool                           # shuffle each source (reshuffled every epoch)
    read_threads:     int > 0                        # grain read/tokenize threads
    prefetch:         int >= 0                       # grain prefetch buffer (documents)

Phase p covers global steps [sum(steps[:p]), sum(steps[:p+1])). The default mirrors the ZAYA1 recipe
(spec §5.3) at toy scale: general -> math-heavy -> long-context reasoning (86% long reasoning documents).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from zaya_jax.data import corpus

REQUIRED_KEYS = ("tokenizer", "sources", "phases")
DEFAULTS = {"eval_sources": {}, "num_packing_bins": 16, "shuffle": True, "read_threads": 2, "prefetch": 64}
PHASE_KEYS = ("name", "steps", "seq_len", "mixture")


class DataConfigError(ValueError):
  """An invalid data config (missing/unknown key, bad phase, mixture naming an unknown source)."""


@dataclasses.dataclass(frozen=True)
class Phase:
  """One pretraining phase, resolved: global steps [start_step, start_step + steps)."""

  index: int
  name: str
  start_step: int
  steps: int
  seq_len: int
  mixture: dict[str, float]


def as_dict(data_cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
  """A validated plain-dict copy of `data_cfg` with defaults filled in."""
  cfg = data_cfg.to_dict() if isinstance(data_cfg, ml_collections.ConfigDict) else dict(data_cfg)
  missing = [k for k in REQUIRED_KEYS if k not in cfg]
  if missing:
    raise DataConfigError(f"data config is missing {missing}")
  unknown = set(cfg) - set(REQUIRED_KEYS) - set(DEFAULTS)
  if unknown:
    raise DataConfigError(f"data config has unknown keys {sorted(unknown)}; "
                          f"allowed: {sorted(REQUIRED_KEYS + tuple(DEFAULTS))}")
  cfg = {**DEFAULTS, **cfg}
  for key in ("sources", "eval_sources"):
    if not isinstance(cfg[key], Mapping) or not all(isinstance(v, Mapping) for v in cfg[key].values()):
      raise DataConfigError(f"{key} must map names to source specs (dicts)")
  if not cfg["sources"]:
    raise DataConfigError("sources is empty")
  if not isinstance(cfg["phases"], (list, tuple)) or not cfg["phases"]:
    raise DataConfigError("phases must be a non-empty list")
  for i, phase in enumerate(cfg["phases"]):
    _check_phase(i, phase, cfg["sources"])
  names = [p["name"] for p in cfg["phases"]]
  if len(set(names)) != len(names):
    raise DataConfigError(f"phase names must be unique, got {names}")
  for key, low in (("num_packing_bins", 1), ("read_threads", 1), ("prefetch", 0)):
    if not isinstance(cfg[key], int) or cfg[key] < low:
      raise DataConfigError(f"{key} must be an int >= {low}, got {cfg[key]!r}")
  return cfg


def _check_phase(i: int, phase: Any, sources: Mapping[str, Any]) -> None:
  if not isinstance(phase, Mapping) or set(phase) != set(PHASE_KEYS):
    raise DataConfigError(f"phase {i} must have exactly the keys {PHASE_KEYS}, got {phase!r}")
  if not isinstance(phase["name"], str) or not phase["name"]:
    raise DataConfigError(f"phase {i}: name must be a non-empty string, got {phase['name']!r}")
  for key in ("steps", "seq_len"):
    if not isinstance(phase[key], int) or phase[key] <= 0:
      raise DataConfigError(f"phase {phase['name']!r}: {key} must be a positive int, got {phase[key]!r}")
  mixture = phase["mixture"]
  if not isinstance(mixture, Mapping) or not mixture:
    raise DataConfigError(f"phase {phase['name']!r}: mixture must be a non-empty {{source: weight}} dict")
  unknown = set(mixture) - set(sources)
  if unknown:
    raise DataConfigError(f"phase {phase['name']!r}: mixture names unknown sources {sorted(unknown)}")
  if any(not isinstance(w, (int, float)) or w < 0 for w in mixture.values()) or sum(mixture.values()) <= 0:
    raise DataConfigError(f"phase {phase['name']!r}: weights must be >= 0 with a positive sum, got {mixture}")


def phases(data_cfg) -> list[Phase]:
  """All phases, resolved to global step ranges."""
  cfg, start, out = as_dict(data_cfg), 0, []
  for i, p in enumerate(cfg["phases"]):
    out.append(Phase(i, p["name"], start, p["steps"], p["seq_len"], dict(p["mixture"])))
    start += p["steps"]
  return out


def phase_for_step(data_cfg, step: int) -> Phase:
  """The phase that global step `step` (0-based) belongs to; steps past the last phase are an error."""
  all_phases = phases(data_cfg)
  for phase in all_phases:
    if phase.start_step <= step < phase.start_step + phase.steps:
      return phase
  total = all_phases[-1].start_step + all_phases[-1].steps
  raise DataConfigError(f"step {step} is outside the data schedule [0, {total})")


def get_phase(data_cfg, phase: int | str) -> Phase:
  """A phase by index or name."""
  all_phases = phases(data_cfg)
  for p in all_phases:
    if phase in (p.index, p.name):
      return p
  raise DataConfigError(f"no phase {phase!r}; phases: {[p.name for p in all_phases]}")


def default_pretrain_config(steps: tuple[int, int, int] = (2000, 1000, 500),
                            seq_lens: tuple[int, int, int] = (256, 256, 1024)) -> ml_collections.ConfigDict:
  """A self-contained three-phase config on the built-in corpus, sized for the tiny model on CPU."""
  def generated(families, difficulties, split="train", per_document=1, num_records=1_000_000):
    return dict(kind="generated", families=list(families), difficulties=list(difficulties), split=split,
                seed=0, num_records=num_records, problems_per_document=per_document)

  math = corpus.MATH_FAMILIES
  return ml_collections.ConfigDict(dict(
      tokenizer="byte",
      sources=dict(
          general=generated(["general"], corpus.DIFFICULTIES),
          math=generated(math, corpus.DIFFICULTIES),
          long_reasoning=generated(math, (3, 4, 5), per_document=8),  # ~2-4K bytes per document
      ),
      phases=[
          dict(name="general", steps=steps[0], seq_len=seq_lens[0], mixture=dict(general=0.7, math=0.3)),
          dict(name="math_heavy", steps=steps[1], seq_len=seq_lens[1], mixture=dict(general=0.3, math=0.7)),
          # Midtraining mix of the recipe: 86% long reasoning, the rest short math and general text.
          dict(name="long_reasoning", steps=steps[2], seq_len=seq_lens[2],
               mixture=dict(long_reasoning=0.86, math=0.07, general=0.07)),
      ],
      eval_sources=dict(
          general=generated(["general"], corpus.DIFFICULTIES, split="heldout", num_records=2_000),
          math=generated(math, corpus.DIFFICULTIES, split="heldout", num_records=2_000),
      ),
      num_packing_bins=16,
      shuffle=True,
      read_threads=2,
      prefetch=64,
  ))
