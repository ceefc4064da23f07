"""Ablation: the tiny job with plain grouped-query attention instead of CCA (same heads and widths).

  python experiments/pretrain.py --config=configs/ablations/gqa_attention.py --workdir=/tmp/ablate_attention
"""

import configs.tiny


def get_config():
  config = configs.tiny.get_config()
  config.model.attention_type = "gqa"  # q/k/v projections + RoPE; no q/k convolutions, norms or delayed value
  return config
