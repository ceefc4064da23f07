"""Ablation: the tiny job with a linear top-1 router (no EDA, router norm or MLP) instead of the ZAYA router.

  python experiments/pretrain.py --config=configs/ablations/linear_router.py --workdir=/tmp/ablate_router
"""

import configs.tiny


def get_config():
  config = configs.tiny.get_config()
  config.model.router_type = "linear"  # one linear layer over experts + skip; same biased top-1 and balancing
  return config
