"""RL stage 1, reasoning warm-up: easy built-in math problems, MaxRL advantages, DPPO trust region, no KL.

  python experiments/posttrain.py --config=configs/posttrain/rl_warmup.py --workdir=/tmp/post/rl_warmup \
      --init=/tmp/post/sft

zaya_jax/posttrain/rl.py documents the loop and `rl.base_config()` every field; no `model` group: the
architecture comes from --init. Tuned on the tiny SFT'd model to raise greedy held-out accuracy within ~10 CPU
minutes (README).
"""

from configs.posttrain import heldout_config
from zaya_jax.data import corpus
from zaya_jax.posttrain import rl


def get_config():
  config = rl.base_config()
  config.optim.lr = 2e-4  # peak learning rate
  config.optim.warmup_steps = 5  # linear warmup
  config.train.update(
      steps=60,  # RL steps
      prompts_per_step=8,  # P
      rollouts_per_prompt=8,  # G
      max_new_tokens=192,  # difficulty-1/2 solutions are ~60-250 bytes
      prompt_width=176,  # the longest difficulty-2 problem in the chat template is ~155 tokens
      checkpoint_every=20,
  )
  config.rl.update(
      advantage="maxrl",
      minibatches=2,  # two updates per step: the second is off-policy, inside the δ trust region
      length_reward=dict(coef=0.1, max_len=192, len_tol=8, acc_tol=0.1),  # a small c during warm-up
  )
  config.rewards.mix.update(math=1.0)
  config.rewards.math.update(families=list(corpus.MATH_FAMILIES), difficulties=[1, 2], seed=0)
  config.heldout = heldout_config()
  return config
