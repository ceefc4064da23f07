"""Pretrains a ZAYA1-architecture model: a thin absl entry point over zaya_jax.train.

  python experiments/pretrain.py --config=configs/tiny.py --workdir=/tmp/zaya_tiny \
      --config.train.steps=200 --config.optim.lr=1e-3

Restarting with the same --workdir resumes from the newest checkpoint; SIGTERM saves and exits. The data is
the config's `data` group (zaya_jax/data: phases, mixtures, the built-in reasoning corpus); without one it
trains on zaya_jax/train/synthetic.py's packed synthetic documents.

Several hosts: start the same command on each, with a --workdir they share and either the flags below or the
environment (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a SLURM / Open MPI / Kubernetes /
TPU launcher; zaya_jax/distributed.py). On one machine, e.g. 2 processes of 4 CPU devices each:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python experiments/pretrain.py --config=configs/tiny.py \
      --workdir=/tmp/zaya_2p --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=0   # and 1
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from zaya_jax import distributed
from zaya_jax import train as zt

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory: checkpoints, metrics.jsonl, tensorboard/")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator service "
                                   f"(multi-process jobs; default ${distributed.COORDINATOR_ENV} or the launcher)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in the job (default "
                                      f"${distributed.NUM_PROCESSES_ENV} or the launcher; 1 without either)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index in [0, num_processes) (default "
                                   f"${distributed.PROCESS_ID_ENV} or the launcher)")
_HEARTBEAT = flags.DEFINE_integer("heartbeat_timeout", 60, "seconds without a heartbeat after which a process "
                                  "counts as dead and the others stop with an error")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save step at INFO; keep warnings and progress
    logging.set_verbosity(logging.WARNING)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         heartbeat_timeout_seconds=_HEARTBEAT.value)  # before anything touches devices
  config = _CONFIG.value
  state = zt.train(config, _WORKDIR.value)  # data: config.data's pipeline, or synthetic without a data group
  # Sampling runs on one process's devices: a multi-process job's params span several (sample from its
  # checkpoint with experiments/rsa_sample.py instead).
  if "data" in config and int(state.step) == config.train.steps and jax.process_count() == 1:
    from zaya_jax.train import samples

    results = samples.solve_heldout(state.params, zt.model_config_from(config), config.data)
    print("\nHeld-out problems, greedy decoding:\n" + samples.format_solutions(results))
  print(f"stopped at step {int(state.step)} of {config.train.steps}; outputs in {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)
