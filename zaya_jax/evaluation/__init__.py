"""Evaluation harness: benchmark files and their published ZAYA1-8B numbers, the report's generation settings
as presets, single-rollout and Markovian RSA runs with graded samples, estimators with bootstrap intervals,
and the Markdown/PNG report. `experiments/evaluate.py` is the command line."""

from zaya_jax.evaluation.benchmarks import (BENCHMARKS, PUBLISHED, BenchmarkError, BenchmarkSpec, Problem,
                                            Published, get_benchmark, load_problems, published, toy_problems)
from zaya_jax.evaluation.harness import (PlainTemplate, batched_rsa, evaluate, problem_scores, round_widths,
                                         summarize)
from zaya_jax.evaluation.metrics import Estimate, bootstrap_ci, majority_at_k, pass_at_k
from zaya_jax.evaluation.presets import PRESETS, Preset, PresetError, get_preset
from zaya_jax.evaluation.report import markdown_table, plot_accuracy_vs_tokens, run_summary, write_report, write_run
from zaya_jax.evaluation.scoring import Graded, cluster, extract_choice, grade

__all__ = [
    "BENCHMARKS", "BenchmarkError", "BenchmarkSpec", "Estimate", "Graded", "PRESETS", "PUBLISHED", "PlainTemplate",
    "Preset", "PresetError", "Problem", "Published", "batched_rsa", "bootstrap_ci", "cluster", "evaluate",
    "extract_choice", "get_benchmark", "get_preset", "grade", "load_problems", "majority_at_k",
    "markdown_table", "pass_at_k", "plot_accuracy_vs_tokens", "problem_scores", "published", "round_widths",
    "run_summary", "summarize", "toy_problems", "write_report", "write_run",
]
