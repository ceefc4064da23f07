"""Cached decoding (prefill + decode_step) equals the full forward pass and transformers' generate."""

import jax
import numpy as np
import pytest
import torch
from conftest import TINY_CONFIGS

from zaya_jax import api, decode_step, forward, init_decode_state, model, positions_from_mask, prefill


def _close(ours, ref, rtol=1e-5):
  ours, ref = np.asarray(ours), np.asarray(ref)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=rtol * np.abs(ref).max())


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_prefill_then_decode_equals_forward(reference_models, name):
  config, _, params = reference_models(name)
  S, P = 10, 4
  ids = np.random.RandomState(10).randint(0, config.vocab_size, (2, S))
  full = np.asarray(forward(params, config, ids))
  state = init_decode_state(config, batch_size=2, max_len=12)
  logits, state = prefill(params, config, ids[:, :P], state, all_logits=True)
  _close(logits, full[:, :P])
  for t in range(P, S):
    logits, state = decode_step(params, config, ids[:, t], state)
    _close(logits, full[:, t])
  assert int(state["index"]) == S
  np.testing.assert_array_equal(np.asarray(state["next_position"]), [S, S])


def test_long_prefill_in_causal_attention_blocks_equals_forward(reference_models):
  """A left-padded prompt spanning two of the prefill's attention blocks, in a config with sliding windows."""
  config, _, params = reference_models("sliding")
  S = model.PREFILL_ATTENTION_BLOCK + 7
  ids = np.random.RandomState(14).randint(1, config.vocab_size, (2, S))
  mask = np.ones_like(ids)
  mask[1, :5] = 0
  full = np.asarray(forward(params, config, ids, mask, positions=positions_from_mask(mask)))
  state = init_decode_state(config, batch_size=2, max_len=S)
  logits, _ = prefill(params, config, ids, state, attention_mask=mask, all_logits=True)
  _close(np.asarray(logits)[0], full[0])
  _close(np.asarray(logits)[1, 5:], full[1, 5:])  # padding positions' outputs are unused


def test_chunked_prefill_equals_forward(reference_models):
  config, _, params = reference_models("sliding")
  ids = np.random.RandomState(11).randint(0, config.vocab_size, (1, 9))
  full = np.asarray(forward(params, config, ids))
  state = init_decode_state(config, batch_size=1, max_len=9)
  for start in range(0, 9, 3):
    logits, state = prefill(params, config, ids[:, start:start + 3], state, all_logits=True)
    _close(logits, full[:, start:start + 3])


def test_left_padded_batch_decodes_like_each_row_alone(reference_models):
  config, _, params = reference_models("base")
  rng = np.random.RandomState(12)
  lengths = [6, 3]
  S = max(lengths)
  ids = np.zeros((2, S), np.int64)
  mask = np.zeros((2, S), np.int64)
  rows = [rng.randint(1, config.vocab_size, (n + 3,)) for n in lengths]  # prompt + 3 continuation tokens
  for b, n in enumerate(lengths):
    ids[b, S - n:] = rows[b][:n]
    mask[b, S - n:] = 1
  state = init_decode_state(config, batch_size=2, max_len=S + 3)
  last, state = prefill(params, config, ids, state, attention_mask=mask)
  steps = [last]
  for k in range(3):
    logits, state = decode_step(params, config, np.array([rows[0][lengths[0] + k], rows[1][lengths[1] + k]]),
                                state)
    steps.append(logits)
  for b, n in enumerate(lengths):
    alone = np.asarray(forward(params, config, rows[b][None]))[0]
    for k, logits in enumerate(steps):
      _close(np.asarray(logits)[b], alone[n - 1 + k])


def _greedy(params, config, ids, mask, new_tokens):
  state = init_decode_state(config, batch_size=ids.shape[0], max_len=ids.shape[1] + new_tokens)
  logits, state = prefill(params, config, ids, state, attention_mask=mask)
  out = []
  for _ in range(new_tokens):
    token = np.asarray(logits).argmax(-1)
    out.append(token)
    logits, state = decode_step(params, config, token, state)
  return np.stack(out, axis=1)


@pytest.mark.parametrize("name", ["base", "sliding"])
def test_greedy_generation_matches_transformers_generate(reference_models, name):
  config, model, params = reference_models(name)
  rng = np.random.RandomState(13)
  ids = rng.randint(1, config.vocab_size, (2, 7))
  mask = np.ones_like(ids)
  mask[1, :3] = 0
  ids[1, :3] = config.pad_token_id
  with torch.no_grad():
    ref = model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                         max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=config.pad_token_id)
  ref = ref[:, ids.shape[1]:].numpy()
  np.testing.assert_array_equal(_greedy(params, config, ids, mask, 8), ref)


def test_decode_state_shapes_and_capacity():
  config = TINY_CONFIGS["base"]
  state = init_decode_state(config, batch_size=3, max_len=5)
  assert state["layer_0"]["k"].shape == (3, 2, 5, 16)  # [B, K, T, d]
  assert state["layers"]["conv"].shape == (2, 3, 2, config.conv_channels)
  assert state["layers"]["delayed"].shape == (2, 3, 16)
  params = api.init_params(config, jax.random.key(0))
  with pytest.raises(api.InputError, match="decode state holds 5 tokens; 0 are used and 6 more do not fit"):
    prefill(params, config, np.ones((3, 6), np.int32), state)


def test_positions_from_mask():
  mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(positions_from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
