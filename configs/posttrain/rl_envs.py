"""RL stage 2, RLVE-style environment curriculum: procedurally generated environments with exact checkers,
each at the difficulty its curriculum keeps near a 0.5-0.7 pass rate (zaya_jax/rewards/envs.py).

  python experiments/posttrain.py --config=configs/posttrain/rl_envs.py --workdir=/tmp/post/rl_envs \
      --init=/tmp/post/rl_warmup
"""

from configs.posttrain import heldout_config
from zaya_jax.posttrain import rl


def get_config():
  config = rl.base_config()
  config.optim.lr = 2e-4
  config.optim.warmup_steps = 5
  config.train.update(steps=60, prompts_per_step=8, rollouts_per_prompt=8,
                      max_new_tokens=128,  # environment answers are short
                      prompt_width=160,  # the longest environment prompt is ~145 tokens
                      checkpoint_every=20)
  config.rl.update(advantage="maxrl", minibatches=2,
                   length_reward=dict(coef=0.3, max_len=128, len_tol=8, acc_tol=0.1))
  config.rewards.mix.update(math=0.0, envs=1.0)
  config.rewards.envs.update(names=[], calibration_groups=0)  # all environments, starting at difficulty 0
  config.heldout = heldout_config()
  return config
