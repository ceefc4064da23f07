"""RL stage 4, math + code + TTC phase 2 (code-focused): the stage-3 recipe with more code prompts.

  python experiments/posttrain.py --config=configs/posttrain/rl_code.py --workdir=/tmp/post/rl_code \
      --init=/tmp/post/rl_math_code_ttc
"""

from configs.posttrain import heldout_config
from zaya_jax.data import corpus
from zaya_jax.posttrain import rl


def get_config():
  config = rl.base_config()
  config.optim.lr = 1e-4
  config.optim.warmup_steps = 5
  config.train.update(steps=60, prompts_per_step=8, rollouts_per_prompt=8, max_new_tokens=192, prompt_width=240,
                      checkpoint_every=20)
  config.rl.update(advantage="maxrl", minibatches=2,
                   length_reward=dict(coef=1.0, max_len=192, len_tol=8, acc_tol=0.1),
                   aggregation_fraction=0.25, aggregation_candidates=4, aggregation_tail=64)
  config.rewards.mix.update(math=0.25, code=0.75)
  config.rewards.math.update(families=list(corpus.MATH_FAMILIES), difficulties=[1, 2], seed=1)
  config.heldout = heldout_config()
  return config
