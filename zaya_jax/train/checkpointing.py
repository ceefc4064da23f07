"""Orbax checkpoints of the train state plus the data iterator, with fallback past a corrupt latest step.

Layout: <directory>/<step>/{state, data}: `state` is the TrainState pytree (StandardSave; params, optimiser
and balancing state, step, RNG), `data` the grain iterator state (one JSON file per process). Saves are
asynchronous: `save` returns once the arrays are copied off the device, and the files are written in the
background. Orbax writes each step into a temporary folder and renames it when complete, so a process killed
mid-save leaves no half-written step that `all_steps` would list; a step damaged later (a truncated file, a
disk error) fails to restore, and `restore_latest` then moves it aside and tries the one before.

Several processes: every process makes the same calls on a shared directory. Orbax writes each array shard
once (by the process whose device holds it), process 0 writes the metadata and renames the step when all are
done; `data` holds one file per process (`process_<i>-of-<n>.json`), so a checkpoint resumes only with the
number of processes that wrote it. A step counts as readable only if it restores on every process.
"""

from __future__ import annotations

import os
import shutil

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from zaya_jax.train.steps import TrainState


class Checkpointer:
  """Keeps the last `keep` checkpoints of a run in `directory` (created if missing)."""

  def __init__(self, directory: str, keep: int):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

  def save(self, state: TrainState, data_iterator) -> None:
    """Starts saving `state` and the iterator's position under step `state.step` (no-op if it exists)."""
    step = int(state.step)
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state._asdict()), data=grain.checkpoint.CheckpointSave(data_iterator)),
        force=True)

  def restore_latest(self, abstract_state: TrainState, iterator_for_step):
    """Restores the newest readable checkpoint -> (TrainState, data iterator), or None if there is none.

    abstract_state: a TrainState of jax.ShapeDtypeStruct (jax.eval_shape of the init), which fixes the tree,
    dtypes and shardings of the restored arrays. iterator_for_step(step) builds the data iterator the
    checkpoint of `step` saved (its state is restored into it). A checkpoint that fails to restore is moved to
    `<directory>.corrupt/<step>` with a warning, and the previous one is tried.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      self._check_process_count(step)
      data_iterator = iterator_for_step(step)
      try:
        restored, error = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state._asdict()),
            data=grain.checkpoint.CheckpointRestore(data_iterator))), None
      except Exception as e:  # noqa: BLE001 - any failure to read a step means: fall back to an older one
        restored, error = None, e
      if not _on_every_process(error is None):
        self._quarantine(step, error or RuntimeError("another process could not read it"))
        continue
      state = restored["state"]
      state = TrainState(**{k: jax.tree.unflatten(jax.tree.structure(getattr(abstract_state, k)),
                                                  jax.tree.leaves(state[k]))
                            for k in TrainState._fields})
      if jax.process_index() == 0:
        print(f"resumed from checkpoint step {step} in {self.directory}", flush=True)
      return state, data_iterator
    return None

  def _check_process_count(self, step: int) -> None:
    """Raises if `step` was written by a job with another number of processes (its data positions are per
    process, and the processes' data shards differ)."""
    data_dir = os.path.join(self.directory, str(step), "data")
    written = sorted(f for f in os.listdir(data_dir) if f.startswith("process_")) if os.path.isdir(data_dir) else []
    ours = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    if written and ours not in written:
      raise ValueError(f"checkpoint {self.directory}/{step} was written by a job with another number of processes "
                       f"({written[0]} in {data_dir}), this job has {jax.process_count()}: resume with as many "
                       f"processes, or start a new workdir from its params (train's init_params)")

  def _quarantine(self, step: int, error: Exception) -> None:
    target = os.path.join(self.directory + ".corrupt", str(step))
    logging.warning("checkpoint step %d in %s is unreadable (%s: %s); moving it to %s and using the previous one",
                    step, self.directory, type(error).__name__, error, target)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.rmtree(target, ignore_errors=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint step {step} moved aside")
    self.manager.reload()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process of the job (so that all of them take the same branch)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))
