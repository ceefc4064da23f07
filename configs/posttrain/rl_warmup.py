"""RL stage 1, reasoning warm-up: easy built-in math problems, MaxRL advantages, DPPO trust region, no KL.

  python experiments/posttrain.py --config=configs/posttrain/rl_warmup.py --workdir=/tmp/post/rl_warmup \
      --init=/tmp/post/sft

zaya_jax/posttrain/rl.py documents the loop and `rl.base_config()` every field; no `model` group: the
architecture comes from --init. Sized for the tiny SFT'd model: 40 steps are ~10 CPU minutes on 2 idle cores
(15-20 wall minutes on a shared machine).

Measured (README; held-out 1000 problems, paired change from the init), from the 600-step SFT model (14.3%):
this config +1.0 [-0.7, +2.6] and +0.8 [-1.0, +2.7] points (train.seed 0 / 1), +0.0 after 100 steps; with
rl.min_correct=0 -0.1 and -0.5, seed 1 drifting onto the answer "0" (118 of 1000 greedy replies). Other
variants from that model (lr 5e-4 / 1e-3, 32 prompts x 8 rollouts, positive advantages only, W-REINFORCE;
README table) stayed within noise or, at the larger learning rates, collapsed onto one answer (-3.9 points).
From a longer-trained SFT model (38.4%): -1.8 [-3.8, +0.3] and -0.6 [-2.5, +1.4] (seeds 0 / 1). No
measurable gain yet. Failure mode to watch (`top_answers` in summary.json): the policy learning to guess a
frequent answer; on the earlier corpus (composite moduli, ~29% of difficulty-2 modular answers 0) the warm-up
moved 113-231 of 1000 replies onto one answer under MaxRL, GRPO and min_correct alike.
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
      warmup_steps=4,  # optimiser updates (two per step)
      # The report's RL Muon has no momentum at 128 prompts x 16 rollouts per minibatch; with 4 prompts per
      # minibatch here, momentum averages the policy gradient's noise.
      muon_momentum=0.9,
      muon_nesterov=True,
  )
  config.train.update(
      steps=40,  # RL steps
      prompts_per_step=8,  # P
      rollouts_per_prompt=16,  # G: at a ~17% sampled solve rate about half of the groups hold a correct rollout
      max_new_tokens=192,  # difficulty-1/2 solutions are ~60-250 bytes
      prompt_width=160,  # the longest difficulty-1/2 problem in the chat template is ~155 tokens
      # Near-greedy rollouts: what RL reinforces is then what greedy decoding (the held-out metric) does; at
      # T = 1 this model's samples were noisier and training drifted into replies that never stop.
      temperature=0.5,
      checkpoint_every=20,
  )
  config.rl.update(
      advantage="maxrl",
      minibatches=2,  # two updates per step, kept groups first: the second is off-policy, or skipped if empty
      # No length reward during warm-up here: the built-in solutions follow fixed step templates, so a
      # shorter correct reply is one that skipped a step (with c = 0.1 replies shrank from ~110 to ~77 tokens).
      length_reward=dict(coef=0.0, max_len=192, len_tol=8, acc_tol=0.1),
      # No overlong filtering: with a ~5% solve rate almost every kept group's rollouts are wrong, and masking the
      # truncated ones exempts exactly the replies that never stop from the negative advantage the wrong replies
      # that stop get. With True (lr 5e-4, seed 0) the truncated fraction of the rollouts rose from 0.5% (steps
      # 1-10) to 16% (steps 31-40), greedy stopped replies fell from 98.5% to 82%, held-out 6.0% -> 6.5%.
      mask_truncated=False,
      # Groups with fewer than 3 correct rollouts of 16 are dropped: at this model's ~15% solve rate a single
      # correct rollout is most often a guess of a frequent answer, which MaxRL weights by G - 1 (README).
      min_correct=3,
  )
  config.rewards.mix.update(math=1.0)
  config.rewards.math.update(families=list(corpus.MATH_FAMILIES), difficulties=[1, 2], seed=0)
  config.heldout = heldout_config()
  return config
