"""The pretraining loop: `train(config, workdir, make_iterator)`, callable from a notebook or experiments/pretrain.py.

config is an ml_collections ConfigDict with the groups `model` (ZayaConfig fields), `mesh` (optional: axis
sizes of zaya_jax/sharding.py's device mesh; params are sharded by the logical-axis rules, batches over the
data-parallel axes, and the MoE runs expert-parallel when `expert` > 1), `optim`
(zaya_jax/train/optimizer.py), `train` (steps, batch_size, seq_len, seed, log_every, eval_every, eval_batches,
checkpoint_every, keep_checkpoints) and `balancing` (zaya_jax/train/balancing.py); configs/tiny.py documents
every field.

Outputs in `workdir`: checkpoints/ (orbax; the last `keep_checkpoints`), metrics.jsonl, tensorboard/, and
training.png once the run is complete. A run restarted in the same workdir resumes from the newest readable
checkpoint (data iterator included) and reproduces bit-identically the losses of a run that never stopped.
SIGTERM (preemption) finishes the current step, saves a checkpoint and returns.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from zaya_jax import sharding
from zaya_jax.config import ZayaConfig
from zaya_jax.data.pipeline import BATCH_KEYS
from zaya_jax.train import reporting
from zaya_jax.train.checkpointing import Checkpointer
from zaya_jax.train.feeds import DataFeed, feed_for
from zaya_jax.train.optimizer import make_optimizer, make_schedule
from zaya_jax.train.steps import TrainState, init_train_state, make_eval_step, make_train_step


def model_config_from(config: ml_collections.ConfigDict) -> ZayaConfig:
  return ZayaConfig.from_dict(config.model.to_dict())


@functools.lru_cache(maxsize=4)
def _programs(model_config: ZayaConfig, optim_json: str, balancing_json: str, total_steps: int):
  """(optimizer, jitted train step, jitted eval step), cached so that calling `train` again with the same
  configuration (a notebook cell re-run, a resumed run in the same process) does not recompile."""
  optim = ml_collections.ConfigDict(json.loads(optim_json))
  optimizer = make_optimizer(optim, total_steps)
  balancing = ml_collections.ConfigDict(json.loads(balancing_json))
  return optimizer, make_train_step(model_config, optimizer, balancing), make_eval_step(model_config)


class _StopOnSigterm:
  """Turns SIGTERM into a `requested` flag the loop polls between steps (only from the main thread, where
  Python delivers signals; elsewhere the default handler stays)."""

  def __enter__(self):
    self.requested = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint after the current step and stopping")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _batch(batch) -> dict[str, np.ndarray]:
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"data batches must hold {BATCH_KEYS}; missing {missing} (got {sorted(batch)})")
  return {k: np.asarray(batch[k]) for k in BATCH_KEYS}


def _mesh(config: ml_collections.ConfigDict):
  """The device mesh of config.mesh (None for a single device or without a mesh group)."""
  if "mesh" not in config:
    return None
  mesh = sharding.make_mesh(config.mesh.to_dict())
  return mesh if mesh.size > 1 else None


def _mesh_context(mesh):
  """Sets the mesh for the step (the MoE runs expert-parallel when its expert axis is > 1)."""
  return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()


def _place_state(state: TrainState, model_config: ZayaConfig, mesh) -> TrainState:
  """One device: everything on it. A mesh: params by the logical-axis rules, the rest replicated (the jitted
  step then lays out the optimiser state as the compiler sees fit)."""
  if mesh is None:
    return jax.device_put(state, jax.devices()[0])
  replicated = NamedSharding(mesh, PartitionSpec())
  placed = jax.device_put(state._replace(params=None), replicated)
  return placed._replace(params=sharding.shard_params(state.params, model_config, mesh))


def _place_batch(batch: dict[str, np.ndarray], mesh):
  if mesh is None:
    return batch
  spec = sharding.batch_sharding(mesh)
  return {k: jax.device_put(v, spec) for k, v in batch.items()}


def evaluate(eval_step, params, eval_batches: Iterator[dict], num_batches: int, mesh=None) -> dict:
  """Mean next-token loss over the first `num_batches` batches of the eval split (the same ones every time)."""
  iterator = eval_batches
  totals = None
  for _ in range(num_batches):
    out = jax.device_get(eval_step(params, _place_batch(_batch(next(iterator)), mesh)))
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  return {"eval_loss": float(totals["nll_sum"] / max(totals["targets"], 1.0)),
          **{f"eval_{k}": v for k, v in reporting.router_summary(totals["counts"]).items() if k != "load"}}


def train(config: ml_collections.ConfigDict, workdir: str, feed: DataFeed | None = None, *,
          stop_at: int | None = None) -> TrainState:
  """Trains (or resumes training) until config.train.steps, or until `stop_at` steps if given (then it saves a
  checkpoint there, so a later call continues: useful to run a long schedule in chunks). Returns the state.

  feed: where batches come from (zaya_jax/train/feeds.py; batch spec in zaya_jax/train/steps.py); its train
  iterators must support get_state/set_state through grain.checkpoint. Default: config.data's pipeline if
  the config has a `data` group, else synthetic data.
  """
  tc = config.train
  model_config = model_config_from(config)
  optimizer, train_step, eval_step = _programs(
      model_config, json.dumps(config.optim.to_dict(), sort_keys=True),
      json.dumps(config.balancing.to_dict(), sort_keys=True), tc.steps)
  schedule = make_schedule(config.optim, tc.steps)
  feed = feed or feed_for(config)

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), tc.keep_checkpoints)
  abstract = jax.eval_shape(functools.partial(init_train_state, model_config, optimizer, tc.seed))
  # The saved iterator belongs to the phase of the checkpoint's last step.
  restored = checkpointer.restore_latest(abstract, lambda done: feed.iterator("train", feed.phase_of(max(done - 1, 0))))
  if restored is None:
    state = init_train_state(model_config, optimizer, tc.seed)
    train_iterator = feed.iterator("train", feed.phase_of(0))
  else:
    state, train_iterator = restored
  mesh = _mesh(config)
  # Placed the same way whether fresh or restored, so both share one compiled step.
  state = _place_state(state, model_config, mesh)
  start = int(state.step)
  phase = feed.phase_of(max(start - 1, 0))
  end = tc.steps if stop_at is None else min(stop_at, tc.steps)
  writer = reporting.MetricsWriter(workdir, start)

  window, window_tokens, window_start = [], 0, time.perf_counter()
  step = start
  with _StopOnSigterm() as stop:
    for step in range(start + 1, end + 1):  # `step` counts the steps done once this iteration's update is in
      if feed.phase_of(step - 1) != phase:  # a new data phase starts with a fresh iterator
        phase = feed.phase_of(step - 1)
        train_iterator = feed.iterator("train", phase)
        print(f"step {step}: data phase {phase}", flush=True)
      batch = _batch(next(train_iterator))
      with _mesh_context(mesh):
        state, metrics = train_step(state, _place_batch(batch, mesh))
      window.append(metrics)
      window_tokens += int(np.count_nonzero(batch["segment_ids"]))
      if step % tc.log_every == 0 or step == end or stop.requested:
        window = jax.device_get(window)
        elapsed = time.perf_counter() - window_start
        record = {"step": step, "loss": float(np.mean([m["loss"] for m in window])),
                  "lr": float(schedule(step - 1)), "grad_norm": float(window[-1]["grad_norm"]),
                  "tokens_per_s": window_tokens / elapsed,
                  **reporting.router_summary(np.sum([m["counts"] for m in window], axis=0))}
        writer.write(record)
        print(reporting.progress_line(record, tc.steps, elapsed / len(window) * (tc.steps - step)), flush=True)
        window, window_tokens, window_start = [], 0, time.perf_counter()
      if tc.eval_every and (step % tc.eval_every == 0 or step == tc.steps):
        with _mesh_context(mesh):
          writer.write({"step": step, **evaluate(eval_step, state.params, feed.iterator("eval", 0),
                                                  tc.eval_batches, mesh)})
      if step % tc.checkpoint_every == 0 or step == end or stop.requested:
        checkpointer.save(state, train_iterator)
      if stop.requested:
        break
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if step == tc.steps:
    reporting.plot_metrics(workdir)
  return state
