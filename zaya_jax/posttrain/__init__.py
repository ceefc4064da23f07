"""Post-training (spec §5.4): SFT, the RL stages and the pipeline that chains them.

  stages.run(config, workdir, init)       a stage by config.stage, or the pipeline (experiments/posttrain.py)
  stages.start_stage / finish_stage       shared by every stage: model from the init checkpoint, summary.json
  sft.run(config, workdir, init)          supervised fine-tuning on the trainer (zaya_jax/posttrain/sft.py)
  sft_data                                chat formatting with assistant-only targets, packing, aggregation examples
  heldout.evaluate_heldout(...)           greedy held-out accuracy on the built-in problems
"""
