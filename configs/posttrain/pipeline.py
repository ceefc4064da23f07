"""The post-training pipeline: SFT in two cycles (`sft`, `sft_continue`), then the five RL stages, each stage
from the previous stage's checkpoint.

  python experiments/posttrain.py --config=configs/posttrain/pipeline.py --workdir=/tmp/post --init=/tmp/pre/tiny

Stage `name` runs in <workdir>/<name> with the config <config_dir>/<name>.py. Re-running the same command
skips finished stages and resumes an interrupted one; --config.stages=sft,rl_warmup runs a prefix.
"""

import os

import ml_collections

from zaya_jax.posttrain.stages import DEFAULT_STAGES


def get_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      stage="pipeline",
      stages=",".join(DEFAULT_STAGES),  # stage names in order, comma-separated
      config_dir=os.path.dirname(os.path.abspath(__file__)),  # where <name>.py of each stage lives
  ))
