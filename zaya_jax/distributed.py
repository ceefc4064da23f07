"""Multi-host start-up: `initialize` connects the processes of a job before anything touches devices.

JAX runs one process per host (or per accelerator), each driving its local devices; `jax.distributed.initialize`
joins them through a coordinator service on process 0, after which `jax.devices()` lists every device of the
job and one jitted program spans them all (zaya_jax/train/trainer.py then builds its mesh over all of them).

Where the job's shape comes from, first match wins:
  1. arguments (experiments/pretrain.py's --coordinator_address, --num_processes, --process_id);
  2. the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID;
  3. a launcher JAX detects by itself: SLURM (srun), Open MPI (mpirun), Kubernetes indexed Jobs, TPU pods;
     JAX then reads the coordinator, process count and id from the launcher.
A job of one process (nothing set, a launcher that started one task, or num_processes / JAX_NUM_PROCESSES = 1)
initializes nothing. Launchers are recognised by their environment variables only (no network queries), so a
Cloud TPU VM pod known only through its metadata server needs the three values given explicitly.

A process that dies stops sending heartbeats; after `heartbeat_timeout_seconds` the coordinator reports it
and every other process aborts with an error (instead of waiting forever in a collective). If the coordinator
(process 0) dies, the others notice at their next heartbeat and abort too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

import jax

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


class Job(NamedTuple):
  """What `jax.distributed.initialize` is given; None leaves a field to the launcher JAX detects."""
  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None
  source: str  # where the values came from, for messages


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
  value = environ.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _launcher(environ: Mapping[str, str]) -> tuple[str, int | None] | None:
  """(name, number of processes if the environment says) of a multi-process launcher JAX auto-detects."""
  if "OMPI_MCA_orte_hnp_uri" in environ:
    return "Open MPI", _int_env(environ, "OMPI_COMM_WORLD_SIZE")
  if "SLURM_JOB_ID" in environ and "SLURM_NTASKS" in environ and "SLURM_PROCID" in environ:
    return "SLURM", _int_env(environ, "SLURM_NTASKS")
  hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES")
  if "MEGASCALE_COORDINATOR_ADDRESS" in environ:
    return "TPU multislice", None
  if hosts:
    return "TPU pod", len(hosts.split(","))
  if "KUBERNETES_SERVICE_HOST" in environ and "JOB_COMPLETION_INDEX" in environ:
    return "Kubernetes indexed Job", None
  return None


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, environ: Mapping[str, str] | None = None) -> Job | None:
  """The job to initialize (module doc: arguments, then JAX_* variables, then a launcher), or None for one process.

  Raises ValueError for an incomplete or inconsistent setting, naming the values.
  """
  environ = os.environ if environ is None else environ
  explicit = (coordinator_address, num_processes, process_id)
  from_env = (environ.get(COORDINATOR_ENV) or None, _int_env(environ, NUM_PROCESSES_ENV),
              _int_env(environ, PROCESS_ID_ENV))
  address, count, index = (a if a is not None else e for a, e in zip(explicit, from_env))
  if any(v is not None for v in explicit):
    source = "arguments" + (" and JAX_* environment variables" if any(v is not None for v in from_env) else "")
  elif any(v is not None for v in from_env):
    source = "JAX_* environment variables"
  else:
    launcher = _launcher(environ)
    if launcher is None or launcher[1] == 1:
      return None
    return Job(None, None, None, launcher[0])
  if count is not None and count < 1:
    raise ValueError(f"num_processes must be >= 1, got {count} (from {source})")
  if count is not None and index is not None and not 0 <= index < count:
    raise ValueError(f"process_id {index} is not in [0, num_processes={count}) (from {source})")
  if count == 1:
    return None
  missing = [name for name, v in zip(("coordinator_address", "num_processes", "process_id"), (address, count, index))
             if v is None]
  if missing and _launcher(environ) is None:
    raise ValueError(f"a multi-process job needs coordinator_address, num_processes and process_id; {missing} "
                     f"not set (arguments or {COORDINATOR_ENV}, {NUM_PROCESSES_ENV}, {PROCESS_ID_ENV}); got "
                     f"coordinator_address={address!r}, num_processes={count}, process_id={index} from {source}")
  return Job(address, count, index, source)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, heartbeat_timeout_seconds: int = 60,
               shutdown_timeout_seconds: int = 60, initialization_timeout: int = 300) -> bool:
  """Joins this process to its multi-process job (module doc) -> whether the job has several processes.

  Call it before anything touches devices. A no-op for one process, and when already initialized.
  heartbeat_timeout_seconds: how long a silent peer counts as alive; then every process aborts with an error.
  shutdown_timeout_seconds: how long a finishing process waits at exit for the others to finish.
  initialization_timeout: how long to wait for all processes to connect.
  """
  if jax.distributed.is_initialized():
    return True
  job = resolve(coordinator_address, num_processes, process_id)
  if job is None:
    return False
  # Cross-process collectives of the CPU backend (which has none of its own); GPU and TPU keep NCCL / ICI.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(job.coordinator_address, job.num_processes, job.process_id,
                             initialization_timeout=initialization_timeout,
                             heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                             shutdown_timeout_seconds=shutdown_timeout_seconds)
  print(f"process {jax.process_index()} of {jax.process_count()} ({job.source}): "
        f"{jax.local_device_count()} local of {jax.device_count()} devices", flush=True)
  return True
