"""RL stage 1, reasoning warm-up: easy built-in math problems, MaxRL advantages, DPPO trust region, no KL.

  python experiments/posttrain.py --config=configs/posttrain/rl_warmup.py --workdir=/tmp/post/rl_warmup \
      --init=/tmp/post/sft_continue

zaya_jax/posttrain/rl.py documents the loop and `rl.base_config()` every field; no `model` group: the
architecture comes from --init. Sized for the tiny SFT'd model: 32 steps of 64 prompts x 8 rollouts are ~20 CPU
minutes on 2 idle cores, and the two avg@8 held-out scores (init and final) ~6 minutes each.

Measured (README; held-out 1000 problems, paired change from the init), from the 38.4% SFT model (the
pipeline's `sft_continue`): this config +0.7 [-1.3, +2.7], +1.2 [-0.6, +3.0] and +1.0 [-1.1, +3.2] greedy
(train.seed 0 / 1 / 2), avg@8 +1.7 [+0.5, +2.7], +2.1 [+1.1, +3.0] and +2.2 [+1.2, +3.3], on problems whose
answer is not one the policy answers often (benchmarks/heldout_split.py). From the 14.3% model (one SFT cycle) its gain was mostly guessing: "0" in 106 of
1000 greedy replies (under 48 before). Muon lr 6e-4 narrowed the replies (pass@8 -10 points) without gain;
AdamW lr 6e-4 lost 7 points in 8 steps. The earlier warm-up, 40 steps of 8 prompts x 16 rollouts (two
updates a step, min_correct=3), learned the problems it was shown instead (+5.0 points on its own training
prompts, benchmarks/rl_replay.py) and changed held-out greedy accuracy by -1.8 / -0.6 (avg@8 -1.2 / -0.0); from
the 14.3% SFT model by +1.0 / +0.8. Failure mode to watch (`top_answers` in summary.json): the policy learning to guess a frequent answer; on the earlier
corpus (composite moduli, ~29% of difficulty-2 modular answers 0) the warm-up moved 113-231 of 1000 replies
onto one answer under MaxRL, GRPO and min_correct alike.
"""

from configs.posttrain import heldout_config
from zaya_jax.data import corpus
from zaya_jax.posttrain import rl


def get_config():
  config = rl.base_config()
  config.optim.update(
      # Muon updates are RMS-matched to AdamW's (~0.2 lr per entry); 2e-3 made replies run on. 5e-4 (2 seeds)
      # collapsed greedy replies onto the answer "0" (45-93/200 replies; a reward hack, not solving);
      # 2e-4 kept the answer distribution broad ("0" in 9-12/200 replies, SFT: 8/200) (earlier corpus).
      lr=2e-4,
      warmup_steps=4,  # optimiser updates (one per step)
      # The report's RL Muon has no momentum at 128 prompts x 16 rollouts per minibatch; with ~18 kept groups
      # per update here, momentum averages the policy gradient's noise.
      muon_momentum=0.9,
      muon_nesterov=True,
  )
  config.train.update(
      steps=32,  # RL steps
      # P: many distinct problems per update. With 8 prompts x 16 rollouts (~2 groups kept per update) every
      # Muon step went to two problems: the policy learned those (+5 points on its training prompts) and lost
      # held-out accuracy; 64 x 8 keeps ~18 groups (~28%) per update at the same learning rate.
      prompts_per_step=64,
      rollouts_per_prompt=8,  # G
      max_new_tokens=192,  # difficulty-1/2 solutions are ~60-250 bytes
      prompt_width=160,  # the longest difficulty-1/2 problem in the chat template is ~155 tokens
      # Near-greedy rollouts: what RL reinforces is then what greedy decoding (the held-out metric) does; at
      # T = 1 this model's samples were noisier and training drifted into replies that never stop.
      temperature=0.5,
      checkpoint_every=8,
  )
  config.rl.update(
      advantage="maxrl",
      minibatches=1,  # one on-policy update per step, over every kept group
      # No length reward during warm-up here: the built-in solutions follow fixed step templates, so a
      # shorter correct reply is one that skipped a step (with c = 0.1 replies shrank from ~110 to ~77 tokens).
      length_reward=dict(coef=0.0, max_len=192, len_tol=8, acc_tol=0.1),
      # No overlong filtering: with a ~5% solve rate almost every kept group's rollouts are wrong, and masking the
      # truncated ones exempts exactly the replies that never stop from the negative advantage the wrong replies
      # that stop get. With True (lr 5e-4, seed 0) the truncated fraction of the rollouts rose from 0.5% (steps
      # 1-10) to 16% (steps 31-40), greedy stopped replies fell from 98.5% to 82%, held-out 6.0% -> 6.5%.
      mask_truncated=False,
      # Groups with fewer than 2 correct rollouts of 8 are dropped: at a ~15% solve rate a single correct
      # rollout is most often a guess of a frequent answer, which MaxRL weights by G - 1 (README).
      min_correct=2,
  )
  config.rewards.mix.update(math=1.0)
  config.rewards.math.update(families=list(corpus.MATH_FAMILIES), difficulties=[1, 2], seed=0)
  config.heldout = heldout_config()
  # avg@8 besides greedy: what RL optimises, with paired intervals about two thirds as wide (README).
  config.heldout.samples = 8
  return config
