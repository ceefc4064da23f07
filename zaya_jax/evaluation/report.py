"""The evaluation report: a Markdown table of measured scores beside the published ZAYA1-8B numbers, and a PNG
of accuracy against generated tokens per problem (Markovian RSA rounds, single-rollout points).

An output directory holds one sub-directory per run, `<benchmark>__<preset>/` with `results.jsonl` (the
per-problem records of `harness.evaluate`) and `summary.json` (`run_summary`), and the report built from
every run in it: `report.md` and `accuracy_vs_tokens.png` (`write_report`).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
from collections.abc import Sequence

from zaya_jax.evaluation.benchmarks import BenchmarkSpec, published
from zaya_jax.evaluation.presets import Preset

REPORT_FILE = "report.md"
PLOT_FILE = "accuracy_vs_tokens.png"


def run_summary(benchmark: BenchmarkSpec, preset: Preset, summary: dict, **extra) -> dict:
  """`harness.summarize`'s output labelled with the run's benchmark and preset and the published numbers for
  the pair; `extra` (e.g. checkpoint, seed) is recorded as given."""
  return {"benchmark": benchmark.name, "title": benchmark.title, "preset": preset.name, "mode": preset.mode,
          "settings": preset.describe(), **extra, **summary,
          "published": [dataclasses.asdict(p) for p in published(benchmark.name, preset.name)]}


def write_run(directory: str, records: Sequence[dict], summary: dict) -> str:
  """Writes `results.jsonl` and `summary.json` of one run under `directory`; returns the run's directory."""
  run_dir = os.path.join(directory, f"{summary['benchmark']}__{summary['preset']}")
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "results.jsonl"), "w") as f:
    f.writelines(json.dumps(record) + "\n" for record in records)
  with open(os.path.join(run_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return run_dir


def write_report(directory: str) -> tuple[str, str | None]:
  """Builds `report.md` (and the PNG, when there is an RSA run) from every run summary under `directory`."""
  summaries = []
  for path in sorted(glob.glob(os.path.join(directory, "*", "summary.json"))):
    with open(path) as f:
      summaries.append(json.load(f))
  if not summaries:
    raise FileNotFoundError(f"no */summary.json under {directory}")
  plot = plot_accuracy_vs_tokens(summaries, os.path.join(directory, PLOT_FILE))
  with open(os.path.join(directory, REPORT_FILE), "w") as f:
    f.write(markdown_table(summaries))
    if plot:
      f.write(f"\n![accuracy against generated tokens]({PLOT_FILE})\n")
  return os.path.join(directory, REPORT_FILE), plot


def _tokens(count: float | None) -> str:
  if count is None:
    return "–"
  for scale, suffix in ((1e6, "M"), (1e3, "K")):
    if count >= scale:
      return f"{count / scale:.3g}{suffix}"
  return f"{count:.0f}"


def _score(scores: dict, prefix: str) -> str:
  """The score named `prefix`k with the largest k (avg@n, maj@n), or a dash."""
  names = [n for n in scores if n.startswith(prefix)]
  if not names:
    return "–"
  name = max(names, key=lambda n: int(n[len(prefix):]))
  s = scores[name]
  return f"{name} {s['mean']:.1f} [{s['low']:.1f}, {s['high']:.1f}]"


def markdown_table(summaries: Sequence[dict]) -> str:
  """One row per run: measured avg@k and maj@k (percent, 95% bootstrap CI), the published ZAYA1-8B score for
  the same benchmark and preset, and generated tokens per problem (measured / published)."""
  lines = ["| Benchmark | Preset | Settings | Problems | Measured avg@k [95% CI] | maj@k [95% CI] | "
           "Published ZAYA1-8B | Gen. tokens/problem (measured / published) |",
           "|---|---|---|---|---|---|---|---|"]
  for s in sorted(summaries, key=lambda s: (s["benchmark"], s["mode"], s["preset"])):
    reported = "; ".join(f"{p['score']:.1f} ({p['source']})" for p in s["published"]) or "–"
    published_tokens = next((p["tokens"] for p in s["published"] if p.get("tokens")), None)
    lines.append(f"| {s['title']} | {s['preset']} | {s['settings']} | {s['problems']} | "
                 f"{_score(s['scores'], 'avg@')} | {_score(s['scores'], 'maj@')} | {reported} | "
                 f"{_tokens(s['generated_tokens_per_problem'])} / {_tokens(published_tokens)} |")
  return "\n".join(lines) + "\n"


def plot_accuracy_vs_tokens(summaries: Sequence[dict], path: str) -> str | None:
  """Writes one panel per benchmark with a Markovian RSA run: accuracy (avg over the round's population) of
  every round against cumulative generated tokens per problem, single-rollout runs as points, and the
  published RSA scores whose token counts the report gives. Returns `path`, or None if there is no RSA run."""
  by_benchmark = collections.defaultdict(list)
  for s in summaries:
    by_benchmark[s["benchmark"]].append(s)
  panels = [b for b, runs in sorted(by_benchmark.items()) if any(r["mode"] == "rsa" for r in runs)]
  if not panels:
    return None
  import matplotlib  # imported here: only the report needs it
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
  for ax, benchmark in zip(axes[0], panels):
    for run in sorted(by_benchmark[benchmark], key=lambda r: r["preset"]):
      xs = [point["tokens_per_problem"] for point in run["curve"]]
      ys = [point["avg"] for point in run["curve"]]
      if run["mode"] == "rsa":
        ax.plot(xs, ys, "o-", label=f"{run['preset']} (rounds 0..{len(xs) - 1})")
      else:
        ax.plot(xs[-1:], ys[-1:], "s", label=f"{run['preset']} (single rollout)")
      for p in run["published"]:
        if p.get("tokens"):
          ax.plot([p["tokens"]], [p["score"]], "*", markersize=12, label=f"{run['preset']} published")
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem (all rollouts, all rounds)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(by_benchmark[benchmark][0]["title"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
