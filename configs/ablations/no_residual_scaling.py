"""Ablation: the tiny job with plain residual sums instead of the learned ResidualScaling merges.

  python experiments/pretrain.py --config=configs/ablations/no_residual_scaling.py --workdir=/tmp/ablate_rs
"""

import configs.tiny


def get_config():
  config = configs.tiny.get_config()
  config.model.residual_scaling = False  # r + h after attention and after the MoE
  return config
