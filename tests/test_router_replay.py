"""Router replay: forced expert choices in the forward, routes recorded by generate, and the RL knob."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_posttrain_rl as t
from conftest import TINY_CONFIGS

from zaya_jax import api
from zaya_jax.api import InputError
from zaya_jax.posttrain import rl, rl_tasks
from zaya_jax.sampling import GREEDY, Sampling, generate, reply_stop_tokens

# fp32 throughout: with the same routes, the replayed forward runs the same ops as the plain one.
CONFIG = dataclasses.replace(TINY_CONFIGS["base"], moe_impl="reference")  # 3 layers: layer_0 + a scan of 2
E, LAYERS = CONFIG.num_experts, CONFIG.num_hidden_layers


@pytest.fixture(scope="module")
def params():
  return api.init_params(CONFIG, jax.random.key(0))


@pytest.fixture(scope="module")
def ids():
  return np.random.RandomState(0).randint(2, CONFIG.vocab_size, (2, 9))


def _own_choices(params, config, ids):
  """The routes the plain forward takes [B,S,L] and its logits."""
  logits, aux = api.forward(params, config, ids, return_aux=True)
  return jnp.moveaxis(aux["expert_index"], 0, -1), logits


def _other_choices(own):
  """A different route for every (token, layer), the skip route included."""
  return (own + 1 + jnp.arange(own.size).reshape(own.shape) % E) % (E + 1)


def test_replaying_the_own_routes_gives_identical_logits(params, ids):
  own, logits = _own_choices(params, CONFIG, ids)
  assert len(np.unique(np.asarray(own))) > 1  # the random router does spread the tokens
  replayed, aux = api.forward(params, CONFIG, ids, expert_choices=own, return_aux=True)
  np.testing.assert_array_equal(np.asarray(replayed), np.asarray(logits))
  np.testing.assert_array_equal(np.asarray(jnp.moveaxis(aux["expert_index"], 0, -1)), np.asarray(own))
  # -1 keeps the router's own choice.
  partly = jnp.where(jnp.arange(ids.shape[1])[None, :, None] % 2 == 0, own, -1)
  np.testing.assert_array_equal(np.asarray(api.forward(params, CONFIG, ids, expert_choices=partly)),
                                np.asarray(logits))


@pytest.mark.parametrize("forced", range(E + 1))
def test_a_forced_route_equals_the_route_the_balancing_biases_force(params, ids, forced):
  """Reference: a huge balancing bias on one class sends every token of every layer there through the
  router's own path; the combine weight is the unbiased probability either way, so forcing that class
  (the skip route included) must give the same logits, and the biases must not matter to a forced route."""
  biased = jax.tree_util.tree_map_with_path(
      lambda path, x: x.at[..., forced].add(10.0) if path[-1].key == "balancing_biases" else x, params)
  reference, aux = api.forward(biased, CONFIG, ids, return_aux=True)
  assert bool(jnp.all(aux["expert_index"] == forced))
  everywhere = jnp.full(ids.shape + (LAYERS,), forced, jnp.int32)
  for p in (params, biased):
    np.testing.assert_allclose(np.asarray(api.forward(p, CONFIG, ids, expert_choices=everywhere)),
                               np.asarray(reference), rtol=0, atol=1e-6)


def test_every_moe_impl_runs_the_forced_routes(params, ids):
  own, logits = _own_choices(params, CONFIG, ids)
  other = _other_choices(own)
  reference = api.forward(params, CONFIG, ids, expert_choices=other)
  assert float(jnp.max(jnp.abs(reference - logits))) > 1e-3
  for impl in ("blocked", "gather", "ragged_dot", "pallas"):  # pallas: with the router kernel, interpreted here
    config = dataclasses.replace(CONFIG, moe_impl=impl, router_impl="pallas" if impl == "pallas" else "auto")
    np.testing.assert_allclose(np.asarray(api.forward(params, config, ids, expert_choices=other)),
                               np.asarray(reference), rtol=0, atol=1e-5, err_msg=impl)


def test_gradients_reach_the_router_under_replay(params, ids):
  own, _ = _own_choices(params, CONFIG, ids)
  target = jax.random.normal(jax.random.key(1), ids.shape + (CONFIG.vocab_size,))
  # One compile for both routes: the choices are a traced argument.
  grads = jax.jit(jax.grad(lambda p, c: jnp.sum(api.forward(p, CONFIG, ids, expert_choices=c) * target)))
  for name, choices in (("own", own), ("other", _other_choices(own))):
    g = grads(params, choices)
    for layer in ("layer_0", "layers"):
      gate = g[layer]["mlp"]["gate"]
      for leaf in ("out_proj_kernel", "down_proj_kernel"):
        assert float(jnp.max(jnp.abs(gate[leaf]))) > 0, (name, layer, leaf)
      assert not bool(jnp.any(gate["balancing_biases"])), (name, layer)


@pytest.mark.parametrize("prefill_chunk", [0, 3])
def test_generate_records_the_routes_of_the_full_forward(prefill_chunk):
  config = dataclasses.replace(TINY_CONFIGS["sliding"], moe_impl="reference")  # sliding windows, 4 layers
  params = api.init_params(config, jax.random.key(2))
  ids = np.random.RandomState(1).randint(2, config.vocab_size, (3, 7))
  mask = np.ones_like(ids)
  mask[0, :3] = mask[1, :1] = 0
  new = 6
  out = generate(params, config, ids, prompt_mask=mask, max_new_tokens=new, sampling=GREEDY, stop_tokens=(),
                 max_lengths=np.asarray([new, 3, new]), record_routing=True, prefill_chunk=prefill_chunk)
  L = config.num_hidden_layers
  assert out.prompt_expert_choices.shape == (3, 7, L) and out.expert_choices.shape == (3, new, L)
  recorded = np.concatenate([np.asarray(out.prompt_expert_choices), np.asarray(out.expert_choices)], axis=1)
  lengths = np.asarray(out.lengths)
  full_mask = np.concatenate([mask, (np.arange(new)[None] < lengths[:, None]).astype(mask.dtype)], axis=1)
  tokens = np.concatenate([ids, np.asarray(out.tokens)], axis=1)
  _, aux = api.forward(params, config, tokens, segment_ids=full_mask,
                       positions=api.positions_from_mask(full_mask), return_aux=True)
  full = np.moveaxis(np.asarray(aux["expert_index"]), 0, -1)
  # A route for every real token the loop fed back: all but the last one of the longest rows.
  expected_taken = full_mask.astype(bool)
  expected_taken[:, 7 + lengths.max() - 1:] = False
  np.testing.assert_array_equal(recorded >= 0, np.repeat(expected_taken[..., None], L, axis=-1))
  taken = recorded >= 0
  np.testing.assert_array_equal(recorded[taken], full[taken])
  assert recorded.max() <= config.num_experts


@pytest.mark.parametrize("choices, message", [
    (np.zeros((2, 9), np.int32), "shape"),
    (np.zeros((2, 8, LAYERS), np.int32), "shape"),
    (np.zeros((2, 9, LAYERS), np.float32), "integers"),
    (np.full((2, 9, LAYERS), E + 1, np.int32), "outside"),
    (np.full((2, 9, LAYERS), -2, np.int32), "outside"),
])
def test_bad_expert_choices_raise(params, ids, choices, message):
  with pytest.raises(InputError, match=message):
    api.forward(params, CONFIG, ids, expert_choices=choices)


def test_an_rl_step_replays_the_rollout_routes(tmp_path):
  """rl.router_replay: rollouts carry their routes into the batch, and a one-minibatch step is on-policy."""
  params = jax.device_put(api.init_params(t.MODEL, jax.random.key(0)), jax.devices()[0])
  config = t._config()
  config.train.update(steps=1, prompts_per_step=2, rollouts_per_prompt=4, max_new_tokens=4)
  config.rl.update(aggregation_fraction=0.0, minibatches=1, advantage="grpo", dynamic_sampling=False,
                   router_replay=True)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(rl_tasks, "_math_score", t._first_byte_even)
    state = rl.train_rl(config, str(tmp_path), params, t.TOKENIZER, t.TEMPLATE)
  [record] = t._records(str(tmp_path))
  assert record["updates"] == 1 and np.isfinite(record["loss"]) and record["masked_fraction"] == 0
  assert record["ratio_mean"] == pytest.approx(1.0, abs=1e-5)  # old and new forwards replay the same routes
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, state.params)
  assert any(jax.tree.leaves(changed))

  # The batch of such a step: routes of prompt | response for every rollout, -1 on the prompt padding.
  # (t.MODEL, the RL tests' model, is a one-layer reference-dispatch model with a byte vocabulary.)
  sampler = rl_tasks.TaskSampler(config.rewards, t.TOKENIZER, t.TEMPLATE, prompt_width=48, group_size=4)
  sampling = Sampling(temperature=1.0, vocab_limit=t.TOKENIZER.vocab_size)  # the loop's: its compiled generate
  s = rl._sample(params, t.MODEL, sampler.sample(1, 2, np.random.default_rng(0)), 48, 4, 4, jax.random.key(0),
                 sampling, reply_stop_tokens(t.MODEL, t.TOKENIZER), t.TOKENIZER.pad_id, record_routing=True)
  s.rewards = s.correct = np.zeros((2, 4))
  batch = rl._training_batch(s, config.rl, rl.objectives.LengthReward(), {})
  choices = batch["expert_choices"]
  assert choices.shape == s.tokens.shape + (t.MODEL.num_hidden_layers,)
  prompt_choices = choices[:, :48]
  real = np.broadcast_to(s.mask[:, :48, None] == 1, prompt_choices.shape)
  assert (prompt_choices[~real] == -1).all() and (prompt_choices[real] >= 0).all()
  assert choices.max() <= t.MODEL.num_experts
