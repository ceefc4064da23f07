"""The pretraining loop: `train(config, workdir, make_iterator)`, callable from a notebook or experiments/pretrain.py.

config is an ml_collections ConfigDict with the groups `model` (ZayaConfig fields), `mesh` (optional: axis
sizes of zaya_jax/sharding.py's device mesh; params are sharded by the logical-axis rules, batches over the
data-parallel axes, and the MoE runs expert-parallel when `expert` > 1), `optim`
(zaya_jax/train/optimizer.py), `train` (steps, batch_size, seq_len, seed, log_every, eval_every, eval_batches,
checkpoint_every, keep_checkpoints) and `balancing` (zaya_jax/train/balancing.py); configs/tiny.py documents
every field.

Outputs in `workdir`: config.json (the run's full config; zaya_jax.loading reads the model from it and the
newest checkpoint), checkpoints/ (orbax; the last `keep_checkpoints`), metrics.jsonl, tensorboard/, and
training.png once the run is complete. A run restarted in the same workdir resumes from the newest readable
checkpoint (data iterator included) and reproduces bit-identically the losses of a run that never stopped.
SIGTERM (preemption) finishes the current step, saves a checkpoint and returns.

Several processes (zaya_jax/distributed.py's `initialize` first): every process runs this same function on
the same config and a shared `workdir`. The mesh spans the devices of all processes (data parallel over all
of them without a mesh group); the global batch is config.train.batch_size rows, each process reading its
contiguous share from its own data shard (zaya_jax/train/feeds.py), which the mesh's batch axes must map onto
that process's devices. Process 0 alone writes config.json, metrics, TensorBoard events and the plot; every
process takes part in each checkpoint (orbax writes the arrays once and each process its iterator position),
and a SIGTERM to any of them stops all of them at one agreed step, with a checkpoint.
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
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from zaya_jax import sharding
from zaya_jax.config import ZayaConfig
from zaya_jax.data.pipeline import BATCH_KEYS
from zaya_jax.train import reporting
from zaya_jax.train.checkpointing import Checkpointer
from zaya_jax.train.feeds import DataFeed, feed_for, local_batch_size
from zaya_jax.train.optimizer import make_optimizer, make_schedule
from zaya_jax.train.steps import TrainState, init_train_state, make_eval_step, make_train_step


def model_config_from(config: ml_collections.ConfigDict) -> ZayaConfig:
  return ZayaConfig.from_dict(config.model.to_dict())


CONFIG_FILE = "config.json"


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the run's config to <workdir>/config.json (process 0 only)."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True))


@functools.lru_cache(maxsize=4)
def _programs(model_config: ZayaConfig, optim_json: str, balancing_json: str, total_steps: int):
  """(optimizer, jitted train step, jitted eval step), cached so that calling `train` again with the same
  configuration (a notebook cell re-run, a resumed run in the same process) does not recompile."""
  optim = ml_collections.ConfigDict(json.loads(optim_json))
  optimizer = make_optimizer(optim, total_steps)
  balancing = ml_collections.ConfigDict(json.loads(balancing_json))
  return optimizer, make_train_step(model_config, optimizer, balancing), make_eval_step(model_config)


class _StopOnSigterm:
  """Turns SIGTERM into `reached(step)`, polled after every step. One process: a Python handler sets a flag
  (only from the main thread, where Python delivers signals; elsewhere the default handler stays). Several
  processes: jax.distributed's preemption sync manager, which owns SIGTERM there, agrees on the step at which
  all of them stop, so that every process takes part in the same final checkpoint."""

  def __enter__(self):
    self.requested = False
    self._previous = None
    self._multi = jax.process_count() > 1
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint after the current step and stopping")
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after `step` (called once per step, by every process)."""
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _cast_like(params, reference):
  """params with reference's tree and dtypes; a different tree or shape raises a ValueError naming the leaf."""
  flat_ref = jax.tree_util.tree_flatten_with_path(reference)[0]
  flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  ref_paths = {path for path, _ in flat_ref}
  if set(flat) != ref_paths:
    missing = sorted(jax.tree_util.keystr(p) for p in ref_paths - set(flat))
    extra = sorted(jax.tree_util.keystr(p) for p in set(flat) - ref_paths)
    raise ValueError(f"init_params do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
  leaves = []
  for path, ref in flat_ref:
    if flat[path].shape != ref.shape:
      raise ValueError(f"init_params{jax.tree_util.keystr(path)} has shape {flat[path].shape}, "
                       f"the model needs {ref.shape}")
    leaves.append(jax.numpy.asarray(flat[path], ref.dtype))
  return jax.tree.unflatten(jax.tree.structure(reference), leaves)


def _batch(batch) -> dict[str, np.ndarray]:
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"data batches must hold {BATCH_KEYS}; missing {missing} (got {sorted(batch)})")
  return {k: np.asarray(batch[k]) for k in BATCH_KEYS}


def _mesh(config: ml_collections.ConfigDict):
  """The device mesh of config.mesh (None for a single device or without a mesh group); a multi-process job
  without a mesh group is data parallel over all devices."""
  if "mesh" not in config:
    return sharding.make_mesh({"data": -1}) if jax.process_count() > 1 else None
  mesh = sharding.make_mesh(config.mesh.to_dict())
  return mesh if mesh.size > 1 else None


def _mesh_context(mesh):
  """Sets the mesh for the step (the MoE runs expert-parallel when its expert axis is > 1)."""
  return jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()


def _state_shardings(abstract: TrainState, model_config: ZayaConfig, mesh) -> TrainState:
  """Where the state lives: one device, or on a mesh the params by the logical-axis rules (as
  sharding.shard_params places them) and the rest replicated (the jitted step then lays out the optimiser
  state as the compiler sees fit). abstract: the state or its jax.eval_shape."""
  if mesh is None:
    return jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), abstract)
  replicated = NamedSharding(mesh, PartitionSpec())
  shardings = jax.tree.map(lambda _: replicated, abstract._replace(params=None))
  params = jax.tree.map(lambda x, s: sharding.divisible(s, x.shape), abstract.params,
                        sharding.param_shardings(model_config, mesh))
  return shardings._replace(params=params)


def _check_process_rows(mesh, global_batch: int) -> None:
  """The feed of process p of P reads rows [p*b, (p+1)*b) of each global batch (b = global_batch / P); the
  mesh must give exactly those rows to the devices of process p."""
  p, count = jax.process_index(), jax.process_count()
  local = local_batch_size(global_batch, count)
  indices = sharding.batch_sharding(mesh).addressable_devices_indices_map((global_batch, 1)).values()
  rows = set()
  for index in indices:
    rows.update(range(*index[0].indices(global_batch)[:2]))
  if rows != set(range(p * local, (p + 1) * local)):
    raise ValueError(f"mesh {dict(mesh.shape)} gives process {p} of {count} batch rows {sorted(rows)[:8]}..., "
                     f"not its contiguous share [{p * local}, {(p + 1) * local}) of the global batch of "
                     f"{global_batch}: the batch axes {sharding.BATCH_AXES} must split the batch over processes "
                     f"(keep `tensor` within a process)")


def _place_batch(batch: dict[str, np.ndarray], mesh):
  """This process's rows [b, ...] -> global arrays [b * process_count, ...] split over the mesh's batch axes."""
  if mesh is None:
    return batch
  spec = sharding.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(spec, v, (v.shape[0] * jax.process_count(),) + v.shape[1:])
          for k, v in batch.items()}


def _to_host(tree):
  """numpy values of the leaves on every process; arrays split over several processes are gathered."""
  def fetch(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)
  return jax.tree.map(fetch, tree)


def _sum_over_processes(value: int) -> int:
  if jax.process_count() == 1:
    return value
  return int(np.sum(multihost_utils.process_allgather(np.int32(value))))


def evaluate(eval_step, params, eval_batches: Iterator[dict], num_batches: int, mesh=None) -> dict:
  """Mean next-token loss over the first `num_batches` batches of the eval split (the same ones every time)."""
  iterator = eval_batches
  totals = None
  for _ in range(num_batches):
    out = _to_host(eval_step(params, _place_batch(_batch(next(iterator)), mesh)))
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  return {"eval_loss": float(totals["nll_sum"] / max(totals["targets"], 1.0)),
          **{f"eval_{k}": v for k, v in reporting.router_summary(totals["counts"]).items() if k != "load"}}


def train(config: ml_collections.ConfigDict, workdir: str, feed: DataFeed | None = None, *,
          stop_at: int | None = None, init_params=None) -> TrainState:
  """Trains (or resumes training) until config.train.steps, or until `stop_at` steps if given (then it saves a
  checkpoint there, so a later call continues: useful to run a long schedule in chunks). Returns the state.

  feed: where batches come from (zaya_jax/train/feeds.py; batch spec in zaya_jax/train/steps.py); its train
  iterators must support get_state/set_state through grain.checkpoint and serve this process's rows of each
  global batch (module doc). Default: config.data's pipeline if the config has a `data` group, else synthetic
  data.
  init_params: parameters to start from instead of a random init (fine-tuning, e.g. zaya_jax.loading's
  load_model(...).params); used only when the workdir has no checkpoint to resume.
  """
  tc = config.train
  model_config = model_config_from(config)
  lead = jax.process_index() == 0  # writes the run's files
  write_config(config, workdir)
  mesh = _mesh(config)
  if jax.process_count() > 1:
    _check_process_rows(mesh, tc.batch_size)
  optimizer, train_step, eval_step = _programs(
      model_config, json.dumps(config.optim.to_dict(), sort_keys=True),
      json.dumps(config.balancing.to_dict(), sort_keys=True), tc.steps)
  schedule = make_schedule(config.optim, tc.steps)
  feed = feed or feed_for(config)

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), tc.keep_checkpoints)
  abstract = jax.eval_shape(functools.partial(init_train_state, model_config, optimizer, tc.seed))
  shardings = _state_shardings(abstract, model_config, mesh)
  # Read straight into place: each process reads only the shards its devices hold.
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  # The saved iterator belongs to the phase of the checkpoint's last step.
  restored = checkpointer.restore_latest(abstract, lambda done: feed.iterator("train", feed.phase_of(max(done - 1, 0))))
  if restored is None:
    state = init_train_state(model_config, optimizer, tc.seed)
    if init_params is not None:  # the optimiser state depends on shapes only, so it stays valid
      state = state._replace(params=_cast_like(init_params, state.params))
    train_iterator = feed.iterator("train", feed.phase_of(0))
  else:
    state, train_iterator = restored
  # Placed the same way whether fresh or restored, so both share one compiled step.
  state = jax.device_put(state, shardings)
  start = int(state.step)
  phase = feed.phase_of(max(start - 1, 0))
  end = tc.steps if stop_at is None else min(stop_at, tc.steps)
  writer = reporting.MetricsWriter(workdir, start) if lead else reporting.NullWriter()

  window, window_tokens, window_start = [], 0, time.perf_counter()
  step = start
  with _StopOnSigterm() as stop:
    for step in range(start + 1, end + 1):  # `step` counts the steps done once this iteration's update is in
      if feed.phase_of(step - 1) != phase:  # a new data phase starts with a fresh iterator
        phase = feed.phase_of(step - 1)
        train_iterator = feed.iterator("train", phase)
        if lead:
          print(f"step {step}: data phase {phase}", flush=True)
      batch = _batch(next(train_iterator))
      with _mesh_context(mesh):
        state, metrics = train_step(state, _place_batch(batch, mesh))
      stopping = stop.reached(step)
      window.append(metrics)
      window_tokens += int(np.count_nonzero(batch["segment_ids"]))
      if step % tc.log_every == 0 or step == end or stopping:
        window = _to_host(window)
        elapsed = time.perf_counter() - window_start
        record = {"step": step, "loss": float(np.mean([m["loss"] for m in window])),
                  "lr": float(schedule(step - 1)), "grad_norm": float(window[-1]["grad_norm"]),
                  "tokens_per_s": _sum_over_processes(window_tokens) / elapsed,
                  **reporting.router_summary(np.sum([m["counts"] for m in window], axis=0))}
        writer.write(record)
        if lead:
          print(reporting.progress_line(record, tc.steps, elapsed / len(window) * (tc.steps - step)), flush=True)
        window, window_tokens, window_start = [], 0, time.perf_counter()
      if tc.eval_every and (step % tc.eval_every == 0 or step == tc.steps):
        with _mesh_context(mesh):
          writer.write({"step": step, **evaluate(eval_step, state.params, feed.iterator("eval", 0),
                                                  tc.eval_batches, mesh)})
      if step % tc.checkpoint_every == 0 or step == end or stopping:
        checkpointer.save(state, train_iterator)
      if stopping:
        break
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if step == tc.steps and lead:
    reporting.plot_metrics(workdir)
  return state
