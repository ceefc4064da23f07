"""RL stage 3, math + code + test-time compute: built-in math problems, template programming tasks graded in
the sandbox, and Markovian RSA aggregation prompts built from the policy's own rollouts (RSA-aware RL).

  python experiments/posttrain.py --config=configs/posttrain/rl_math_code_ttc.py \
      --workdir=/tmp/post/rl_math_code_ttc --init=/tmp/post/rl_envs
"""

from configs.posttrain import heldout_config
from zaya_jax.data import corpus
from zaya_jax.posttrain import rl


def get_config():
  config = rl.base_config()
  config.optim.lr = 2e-4
  config.optim.warmup_steps = 5
  config.train.update(steps=60, prompts_per_step=8, rollouts_per_prompt=8, max_new_tokens=192,
                      prompt_width=240,  # code prompts (statement + format instruction) are ~220 tokens
                      checkpoint_every=20)
  config.rl.update(
      advantage="maxrl", minibatches=2,
      length_reward=dict(coef=1.0, max_len=192, len_tol=8, acc_tol=0.1),  # c = 1 from this stage on
      aggregation_fraction=0.25,  # 2 of 8 prompts aggregate C tails of another prompt's rollouts
      aggregation_candidates=4,  # C, as the SFT aggregation examples (configs/posttrain/sft.py)
      aggregation_tail=64,  # τ, as the SFT aggregation examples
  )
  config.rewards.mix.update(math=0.5, code=0.5)
  config.rewards.math.update(families=list(corpus.MATH_FAMILIES), difficulties=[1, 2])
  config.heldout = heldout_config()
  return config
