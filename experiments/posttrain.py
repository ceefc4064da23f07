"""Post-training: one stage (SFT or an RL stage) or the whole stage pipeline, from a checkpoint.

  python experiments/posttrain.py --config=configs/posttrain/sft.py --workdir=/tmp/post/sft --init=/tmp/pre/tiny
  python experiments/posttrain.py --config=configs/posttrain/pipeline.py --workdir=/tmp/post --init=/tmp/pre/tiny

--init is an HF-format directory or a training workdir (zaya_jax.loading.load_model). The config's `stage`
picks what runs ("sft", "rl" or "pipeline"; zaya_jax/posttrain/stages.py). Restarting with the same --workdir
resumes; SIGTERM saves a checkpoint and exits. Each finished stage prints its held-out accuracy and writes it
to <workdir>/summary.json.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from zaya_jax.posttrain import stages

_CONFIG = config_flags.DEFINE_config_file("config", None, "stage or pipeline config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (the pipeline: one subdirectory per stage)")
_INIT = flags.DEFINE_string("init", None, "checkpoint to start from: HF-format directory or training workdir")
flags.mark_flags_as_required(["config", "workdir", "init"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save step at INFO; keep warnings and progress
    logging.set_verbosity(logging.WARNING)
  stages.run(_CONFIG.value, _WORKDIR.value, _INIT.value)


if __name__ == "__main__":
  app.run(main)
