"""Training outputs: metrics.jsonl, TensorBoard events, the progress line, and the end-of-run PNG.

metrics.jsonl holds one JSON object per logged step: {"step", "loss", "lr", "grad_norm", "tokens_per_s",
"load_max_min": [L], "load_entropy": [L], "skip_rate": [L], "load": [L][E+1]} for training records and
{"step", "eval_loss", ...router stats} for evaluations. On resume, records past the restored step are dropped
(they are recomputed identically), and TensorBoard's purge_step hides the same range in the event files.
In a multi-process job process 0 writes them (the records hold global values) and the others a NullWriter.
"""

from __future__ import annotations

import json
import os

import numpy as np

from zaya_jax.train import balancing as bal

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"


def router_summary(counts_LC) -> dict[str, list]:
  """Per-layer router stats (balancing.router_metrics) and load fractions [L][E+1] as JSON-ready lists."""
  counts = np.asarray(counts_LC, np.float64)
  stats = {k: np.asarray(v).round(6).tolist() for k, v in bal.router_metrics(counts).items()}
  stats["load"] = (counts / np.maximum(counts.sum(-1, keepdims=True), 1.0)).round(6).tolist()
  return stats


class MetricsWriter:
  """Appends records to <workdir>/metrics.jsonl and scalars to TensorBoard events in <workdir>/tensorboard."""

  def __init__(self, workdir: str, start_step: int):
    from tensorboardX import SummaryWriter  # imported here: only the training loop needs it

    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, METRICS_FILE)
    _truncate_records(self.path, start_step)
    self.file = open(self.path, "a")
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)

  def write(self, record: dict) -> None:
    """record: {"step": int, name: float | per-layer list}; lists go to TensorBoard as name/layer_l."""
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()
    step = record["step"]
    for name, value in record.items():
      if name == "step" or name == "load":
        continue
      if isinstance(value, list):
        for layer, v in enumerate(value):
          self.tb.add_scalar(f"{name}/layer_{layer}", v, step)
      else:
        self.tb.add_scalar(name, value, step)
    self.tb.flush()

  def close(self) -> None:
    self.file.close()
    self.tb.close()


class NullWriter:
  """MetricsWriter's stand-in on the processes of a multi-process job other than process 0: discards records."""

  def write(self, record: dict) -> None:
    del record

  def close(self) -> None:
    pass


def _truncate_records(path: str, last_step: int) -> None:
  if not os.path.exists(path):
    return
  with open(path) as f:
    records = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
  with open(path, "w") as f:
    f.writelines(records)


def read_metrics(workdir: str) -> list[dict]:
  """The records of <workdir>/metrics.jsonl in order."""
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


def progress_line(record: dict, total_steps: int, eta_s: float) -> str:
  """'step 120/1000 | loss 3.412 | lr 3.0e-03 | 12.3k tok/s | ETA 2m10s | load max/min 1.8 (layer 2) | ...'."""
  worst = int(np.argmax(record["load_max_min"]))
  return (f"step {record['step']}/{total_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
          f"{record['tokens_per_s'] / 1e3:.1f}k tok/s | ETA {_duration(eta_s)} | "
          f"load max/min {record['load_max_min'][worst]:.2f} (layer {worst}) | "
          f"entropy min {min(record['load_entropy']):.3f} | skip {100 * float(np.mean(record['skip_rate'])):.1f}%")


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def plot_metrics(workdir: str) -> str:
  """Writes <workdir>/training.png: loss (train and eval), per-layer load max/min, last load fractions."""
  import matplotlib  # imported here: only the end of a run needs it

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  records = read_metrics(workdir)
  train = [r for r in records if "loss" in r]
  evals = [r for r in records if "eval_loss" in r]
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
  if evals:
    axes[0].plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval")
  axes[0].set(xlabel="step", ylabel="next-token loss", title="loss")
  axes[0].legend()
  if train:
    ratios = np.array([r["load_max_min"] for r in train])
    for layer in range(ratios.shape[1]):
      axes[1].plot([r["step"] for r in train], ratios[:, layer], label=f"layer {layer}")
    axes[1].set(xlabel="step", ylabel="max / min expert load", title="expert load imbalance", yscale="log")
    axes[1].legend(fontsize="small")
    load = np.array(train[-1]["load"])
    image = axes[2].imshow(load, aspect="auto", cmap="viridis")
    axes[2].set(xlabel="router class (last = skip)", ylabel="layer",
                title=f"load fractions at step {train[-1]['step']}")
    axes[2].set_yticks(range(load.shape[0]))
    fig.colorbar(image, ax=axes[2])
  fig.tight_layout()
  path = os.path.join(workdir, PLOT_FILE)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
