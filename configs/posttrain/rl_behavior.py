"""RL stage 5, behavioural: GRPO with std normalisation, no length reward in the advantage, the lowest
learning rate of the cascade; reward = a binary format check (one non-empty \\boxed{} answer) gating the
answer's correctness, plus DAPO's overlong penalty (zaya_jax/posttrain/rl_tasks.py, "behavior").

  python experiments/posttrain.py --config=configs/posttrain/rl_behavior.py --workdir=/tmp/post/rl_behavior \
      --init=/tmp/post/rl_code
"""

from configs.posttrain import heldout_config
from zaya_jax.data import corpus
from zaya_jax.posttrain import rl


def get_config():
  config = rl.base_config()
  config.optim.lr = 5e-5
  config.optim.warmup_steps = 5
  config.train.update(steps=40, prompts_per_step=8, rollouts_per_prompt=8, max_new_tokens=192, prompt_width=176,
                      checkpoint_every=20)
  config.rl.update(advantage="grpo_std", minibatches=2, length_reward=dict(coef=0.0, max_len=192, len_tol=8,
                                                                           acc_tol=0.1))
  config.rewards.mix.update(math=0.0, behavior=1.0)
  config.rewards.behavior.update(families=list(corpus.MATH_FAMILIES), difficulties=[1, 2], seed=1,
                                 length_budget=192)
  config.heldout = heldout_config()
  return config
