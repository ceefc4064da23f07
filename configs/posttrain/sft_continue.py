"""SFT, second cycle: `sft.py` again from the SFT stage's checkpoint, with another data order.

  python experiments/posttrain.py --config=configs/posttrain/sft_continue.py --workdir=/tmp/post/sft_continue \
      --init=/tmp/post/sft

The pipeline runs it between `sft` and `rl_warmup`. One 600-step SFT cycle left the tiny model far from
converged; a second (its own warmup and decay, new problems) raised greedy held-out accuracy from 14.3% to 38.4%
[35.4, 41.4] (+24.1 points [+21.3, +27.2], README), and only from there did the RL warm-up gain on problems a
guess cannot solve (from the 14.3% model its avg@8 gain came from guessing frequent answers).
"""

from configs.posttrain import sft


def get_config():
  config = sft.get_config()
  config.train.seed = 1  # data order: other problems than the first cycle's (seed 0)
  return config
