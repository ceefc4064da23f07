"""Jitted generation: parity with transformers' greedy generate, sampling rules, stop tokens, compile counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import TINY_CONFIGS

import hf_oracle
from zaya_jax.api import InputError
from zaya_jax.sampling import GREEDY, Sampling, filter_logits, generate, sample_logits
from zaya_jax.sampling import generation

NEW = 10


@pytest.fixture(scope="module")
def model():
  """(config, transformers model, jax params) of a random one-block model with a softened final norm.

  The oracle's random embeddings are tied and large, so its logits mostly repeat the last token with
  probability ~1; scaling the final norm by 0.1 gives varied greedy paths and genuinely random sampling.
  """
  config = TINY_CONFIGS["one_layer"]
  hf_model = hf_oracle.random_hf_model(config, seed=7)
  with torch.no_grad():
    hf_model.model.norm.weight.mul_(0.1)
  return config, hf_model, hf_oracle.jax_params_from_hf(hf_model, config)


@pytest.fixture(scope="module")
def prompts(model):
  """Two left-padded prompts [2, 7] (the second has 3 padding slots) and their mask."""
  config = model[0]
  ids = np.random.RandomState(5).randint(3, config.vocab_size, (2, 7))
  mask = np.ones_like(ids)
  mask[1, :3] = 0
  ids[1, :3] = config.pad_token_id
  return ids, mask


def _hf_greedy(hf_model, ids, mask, eos_token_id=None):
  with torch.no_grad():
    out = hf_model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                            max_new_tokens=NEW, do_sample=False, eos_token_id=eos_token_id, pad_token_id=0)
  return out[:, ids.shape[1]:].numpy()


def test_greedy_equals_transformers_generate(model, prompts):
  config, hf_model, params = model
  ids, mask = prompts
  ours = generate(params, config, ids, prompt_mask=mask, max_new_tokens=NEW, sampling=GREEDY, stop_tokens=())
  np.testing.assert_array_equal(ours.tokens, _hf_greedy(hf_model, ids, mask))
  np.testing.assert_array_equal(ours.lengths, [NEW, NEW])
  assert not ours.stopped.any()
  # Chunked prefill (7 -> 8 columns in chunks of 2: row 1's first two chunks are all padding) is the same.
  chunked = generate(params, config, ids, prompt_mask=mask, max_new_tokens=NEW, sampling=GREEDY, stop_tokens=(),
                     prefill_chunk=2)
  np.testing.assert_array_equal(chunked.tokens, ours.tokens)

  # A stop token that row 0 emits at step 3: transformers pads after it, and so do we (same compiled program).
  stop = int(ours.tokens[0, 3])
  first_hit = [int(np.argmax(row == stop)) if (row == stop).any() else None for row in np.asarray(ours.tokens)]
  stopped = generate(params, config, ids, prompt_mask=mask, max_new_tokens=NEW, sampling=GREEDY,
                     stop_tokens=[stop])
  np.testing.assert_array_equal(stopped.tokens, _hf_greedy(hf_model, ids, mask, eos_token_id=stop))
  expected = [NEW if hit is None else hit + 1 for hit in first_hit]
  np.testing.assert_array_equal(stopped.lengths, expected)
  np.testing.assert_array_equal(stopped.stopped, [hit is not None for hit in first_hit])


def test_per_sequence_stop_tokens_and_lengths_compile_once(model, prompts):
  config, _, params = model
  ids, mask = prompts
  run = lambda **kw: generate(params, config, ids, prompt_mask=mask, max_new_tokens=NEW, sampling=GREEDY, **kw)
  free = np.asarray(run(stop_tokens=()).tokens)
  compiles = generation._generate._cache_size()
  # Row 0 stops on its own 4th token; row 1 never stops but is limited to 2 tokens.
  out = run(stop_tokens=[[int(free[0, 3])], [-1]], max_lengths=[NEW, 2])
  n0 = int(np.argmax(free[0] == free[0, 3])) + 1
  np.testing.assert_array_equal(out.lengths, [n0, 2])
  np.testing.assert_array_equal(out.stopped, [True, False])
  np.testing.assert_array_equal(out.tokens[0, :n0], free[0, :n0])
  np.testing.assert_array_equal(out.tokens[1, :2], free[1, :2])
  assert (np.asarray(out.tokens[0, n0:]) == config.pad_token_id).all()
  assert (np.asarray(out.tokens[1, 2:]) == config.pad_token_id).all()
  assert generation._generate._cache_size() == compiles  # new stop ids and lengths reuse the program


def test_sampling_is_deterministic_given_the_key(model, prompts):
  config, _, params = model
  ids, mask = prompts
  run = lambda seed: generate(params, config, ids, prompt_mask=mask, max_new_tokens=NEW, key=jax.random.key(seed),
                             sampling=Sampling(top_p=0.9), stop_tokens=())
  a, b, c = run(0), run(0), run(1)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)
  compiles = generation._generate._cache_size()
  run(2)
  assert generation._generate._cache_size() == compiles  # one compile per shape, not per call or token


def test_filters_exclude_exactly_the_right_tokens():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
  kept = lambda s: np.isfinite(np.asarray(filter_logits(logits, s)))
  np.testing.assert_array_equal(kept(Sampling(top_k=2)), [[1, 1, 0, 0], [0, 0, 1, 1]])
  np.testing.assert_array_equal(kept(Sampling(top_p=0.8)), [[1, 1, 0, 0], [0, 0, 1, 1]])
  np.testing.assert_array_equal(kept(Sampling(top_p=0.81)), [[1, 1, 1, 0], [0, 1, 1, 1]])
  np.testing.assert_array_equal(kept(Sampling(top_p=0.01)), [[1, 0, 0, 0], [0, 0, 0, 1]])
  np.testing.assert_array_equal(kept(Sampling(min_p=0.35)), [[1, 1, 0, 0], [0, 0, 1, 1]])
  # Temperature changes the distribution before top-p: at T=0.5 the top two hold 0.90 of the mass.
  np.testing.assert_array_equal(kept(Sampling(temperature=0.5, top_p=0.85)), [[1, 1, 0, 0], [0, 0, 1, 1]])

  # top_k=1 keeps only the argmax, so sampling reproduces greedy decoding.
  np.testing.assert_array_equal(sample_logits(jax.random.key(0), logits, Sampling(top_k=1)), [0, 3])
  np.testing.assert_array_equal(sample_logits(None, logits, GREEDY), [0, 3])

  # Thousands of draws never land on an excluded token, and do reach every kept one.
  keys = jax.random.split(jax.random.key(0), 2000)
  for s in (Sampling(top_k=2), Sampling(top_p=0.81), Sampling(min_p=0.35)):
    draws = np.asarray(jax.vmap(lambda k: sample_logits(k, logits, s))(keys))  # [2000, 2]
    for row in range(2):
      assert set(draws[:, row]) == set(np.flatnonzero(kept(s)[row]))


def test_argmax_and_draws_equal_jax_random_categorical():
  x = jax.random.normal(jax.random.key(3), (4, 50)).at[:, 30].set(9.0).at[:, 7].set(9.0)  # ties: the first wins
  np.testing.assert_array_equal(generation.argmax(x), [7, 7, 7, 7])
  logits = jax.random.normal(jax.random.key(4), (3, 50))
  for seed, s in enumerate((Sampling(), Sampling(top_k=10), Sampling(temperature=0.5, top_p=0.7))):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(sample_logits(key, logits, s),
                                  jax.random.categorical(key, filter_logits(logits, s), axis=-1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=0), "max_new_tokens must be a positive int"),
    (dict(sampling=Sampling()), "needs a PRNG key"),
    (dict(stop_tokens=[500]), "stop token ids must lie in"),
    (dict(max_lengths=[9]), "max_lengths must be"),
    (dict(prompt_mask=np.array([[1, 1, 0]])), "left padding|left-padded"),
])
def test_bad_input_is_named(model, kwargs, message):
  config, _, params = model
  args = dict(max_new_tokens=4, sampling=GREEDY) | kwargs
  with pytest.raises(InputError, match=message):
    generate(params, config, np.ones((1, 3), np.int32), **args)


@pytest.mark.parametrize("kwargs", [dict(temperature=-1.0), dict(top_k=-1), dict(top_p=0.0), dict(min_p=2.0),
                                    dict(vocab_limit=-1)])
def test_bad_sampling_settings(kwargs):
  with pytest.raises(ValueError):
    Sampling(**kwargs)
