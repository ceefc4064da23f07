"""Pretrains a ZAYA1-architecture model: a thin absl entry point over zaya_jax.train.

  python experiments/pretrain.py --config=configs/tiny.py --workdir=/tmp/zaya_tiny \
      --config.train.steps=200 --config.optim.lr=1e-3

Restarting with the same --workdir resumes from the newest checkpoint; SIGTERM saves and exits. The data is
the config's `data` group (zaya_jax/data: phases, mixtures, the built-in reasoning corpus); without one it
trains on zaya_jax/train/synthetic.py's packed synthetic documents.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from zaya_jax import train as zt

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory: checkpoints, metrics.jsonl, tensorboard/")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save step at INFO; keep warnings and progress
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  state = zt.train(config, _WORKDIR.value)  # data: config.data's pipeline, or synthetic without a data group
  if "data" in config and int(state.step) == config.train.steps:
    from zaya_jax.train import samples

    results = samples.solve_heldout(state.params, zt.model_config_from(config), config.data)
    print("\nHeld-out problems, greedy decoding:\n" + samples.format_solutions(results))
  print(f"stopped at step {int(state.step)} of {config.train.steps}; outputs in {_WORKDIR.value}")


if __name__ == "__main__":
  app.run(main)
