"""Post-training stage configs (experiments/posttrain.py): sft, the five RL stages, and the pipeline over them.

Stage configs hold no architecture: the `model` group is filled from the init checkpoint
(zaya_jax/posttrain/stages.py). Every stage scores the same held-out problems (`heldout_config`), so the
accuracies of the stages compare.
"""

import ml_collections

from zaya_jax.data import corpus


def heldout_config() -> ml_collections.ConfigDict:
  """Greedy held-out accuracy after a stage (zaya_jax/posttrain/heldout.py): easy built-in math problems."""
  return ml_collections.ConfigDict(dict(
      families=list(corpus.MATH_FAMILIES),  # problem families, cycled
      difficulties=[1, 2],  # difficulties, cycled after each round of families
      # Problems (held-out split; none appears in training). 1000: at ~18% accuracy a 95% interval is +-2.4
      # points (+-5 on 200, where stage-to-stage differences of 3 points turned out to be noise); ~40 s a score.
      count=1000,
      seed=0,  # which problems
      max_new_tokens=256,  # decode budget per answer (difficulty-2 solutions are ~100-250 bytes)
      batch_size=100,  # prompts (sampled: replies) per generate call
      samples=0,  # k > 0 also scores avg@k, k replies per problem sampled at `temperature` (k times the cost)
      temperature=0.5,  # of the avg@k replies: the RL stages' rollout temperature
      evaluate_init=True,  # also score the checkpoint the stage starts from (heldout_init in summary.json)
  ))
