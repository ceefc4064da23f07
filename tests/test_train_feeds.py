"""Training on the real data pipeline across phase boundaries: a run stopped and resumed at and around a phase
change logs exactly the losses of an uninterrupted run."""

import ml_collections
import pytest

import configs.tiny
from zaya_jax import data
from zaya_jax.train import feeds, reporting, samples, trainer


def _config():
  config = configs.tiny.get_config()
  config.model = ml_collections.ConfigDict(dict(
      vocab_size=288, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
      head_dim=16, moe_intermediate_size=32, num_experts=4, router_hidden_size=8, bos_token_id=1,
      eos_token_id=2))
  config.data = data.default_pretrain_config(steps=(3, 2, 3), seq_lens=(32, 32, 48))
  config.train.update(steps=8, batch_size=2, seq_len=32, log_every=1, eval_every=4, eval_batches=2,
                      checkpoint_every=100, keep_checkpoints=5)
  return config


def _losses(workdir):
  return {r["step"]: r["loss"] for r in reporting.read_metrics(workdir) if "loss" in r}


def test_phases_switch_and_resume_exactly(tmp_path):
  config = _config()
  feed = feeds.feed_for(config)
  assert [feed.phase_of(s) for s in range(10)] == [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
  straight = tmp_path / "straight"
  trainer.train(config, str(straight))
  reference = _losses(straight)
  assert sorted(reference) == list(range(1, 9))

  resumed = tmp_path / "resumed"
  for stop in (3, 4, 6, 8):  # at the end of phase 0, inside phase 1, inside phase 2, the end
    state = trainer.train(config, str(resumed), stop_at=stop)
    assert int(state.step) == stop
  assert _losses(resumed) == reference

  # What experiments/pretrain.py prints at the end: greedy solutions to held-out problems.
  results = samples.solve_heldout(state.params, trainer.model_config_from(config), config.data, count=2,
                                  max_new_tokens=6)
  assert [sorted(r) for r in results] == [["answer", "correct", "generated", "problem", "reference"]] * 2
  assert all(isinstance(r["generated"], str) and r["problem"] for r in results)


def test_tokenizer_larger_than_the_model_vocabulary_is_refused():
  config = _config()
  config.model.vocab_size = 100
  with pytest.raises(ValueError, match="tokenizer 'byte' has 272 ids but the model's vocab_size is 100"):
    feeds.feed_for(config)
