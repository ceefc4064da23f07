"""Markovian RSA and Delethink on a real (randomly initialised) tiny ZAYA model with the byte tokenizer."""

import jax
import numpy as np
import pytest

from zaya_jax import ZayaConfig, init_params
from zaya_jax.data import ByteTokenizer
from zaya_jax.sampling import (AggregationTemplate, ByteChatTemplate, Delethink, PromptBuilder, RSAConfig,
                               RSAConfigError, generate, generation, left_pad, majority_vote, markovian_rsa,
                               rollout)

N, BUDGET, TAIL = 4, 6, 3
KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def model():
  config = ZayaConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, moe_intermediate_size=16,
                      num_experts=2, router_hidden_size=8, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      dtype="float32", moe_impl="reference")
  return config, init_params(config, jax.random.key(0))


@pytest.fixture(scope="module")
def prompts():
  template = AggregationTemplate(header="Merge.\nQ: ", intro="", candidate="\n#{i}: ", footer="\nA:")
  return PromptBuilder(ByteTokenizer(), ByteChatTemplate(), "1+2=?", template)


def _run(model, prompts, **kw):
  config, params = model
  rsa = RSAConfig(**(dict(population=N, candidates=2, rounds=2, budget=BUDGET, tail=TAIL) | kw))
  return list(markovian_rsa(params, config, prompts, rsa, KEY))


def _contains(seq, sub):
  return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_aggregation_prompts_hold_c_distinct_tails_of_the_previous_round(model, prompts):
  rounds = _run(model, prompts, rounds=2)
  assert [r.index for r in rounds] == [0, 1, 2]
  assert rounds[0].candidates is None and rounds[0].prompts == [prompts.initial()] * N
  for prev, cur in zip(rounds, rounds[1:]):
    assert cur.candidates.shape == (N, 2)
    for i, row in enumerate(cur.candidates):
      assert len(set(row.tolist())) == 2 and all(0 <= j < N for j in row)
      tails = [prev.tails[j] for j in row]
      assert cur.prompts[i] == prompts.aggregation(tails)
      for k, (j, tail) in enumerate(zip(row, tails)):
        trace = prev.rollouts.trace(j)
        body = trace[:-1] if prev.rollouts.stopped[j] else trace
        assert 0 < len(tail) <= TAIL and tail == body[-TAIL:]
        assert _contains(cur.prompts[i], ByteTokenizer().encode(f"\n#{k + 1}: ") + tail)
  for r in rounds:
    assert (r.rollouts.lengths <= BUDGET).all()
  assert len({tuple(t) for t in rounds[0].tails}) > 1  # samples differ across the population


def test_more_rounds_reuse_the_same_programs(model, prompts):
  _run(model, prompts, rounds=1)
  compiles = generation._generate._cache_size()
  _run(model, prompts, rounds=4)
  # T only changes how often the two programs (round 0, aggregation round) run: nothing new is compiled, so
  # compiled memory is the same for every T.
  assert generation._generate._cache_size() == compiles


def test_zero_rounds_is_parallel_sampling(model, prompts):
  config, params = model
  (only,) = _run(model, prompts, rounds=0)
  sample_key = jax.random.split(jax.random.fold_in(KEY, 0))[1]
  ids, mask = left_pad([prompts.initial()] * N, len(prompts.initial()), 0)
  expected = generate(params, config, ids, prompt_mask=mask, max_new_tokens=BUDGET, key=sample_key, pad_id=0)
  np.testing.assert_array_equal(only.rollouts.tokens, expected.tokens)


def test_one_candidate_continues_its_own_tail(model, prompts):
  rounds = _run(model, prompts, candidates=1, rounds=1, final_budget=BUDGET + 2)
  assert rounds[0].rollouts.tokens.shape == (N, BUDGET) and rounds[1].rollouts.tokens.shape == (N, BUDGET + 2)
  np.testing.assert_array_equal(rounds[1].candidates[:, 0], np.arange(N))
  for i in range(N):
    assert rounds[1].prompts[i] == prompts.initial() + rounds[0].tails[i]


def test_tail_equal_to_budget_forwards_whole_rollouts(model, prompts):
  rounds = _run(model, prompts, tail=BUDGET, rounds=1)
  for j in range(N):
    trace = rounds[0].rollouts.trace(j)
    assert rounds[0].tails[j] == (trace[:-1] if rounds[0].rollouts.stopped[j] else trace)
  for i, row in enumerate(rounds[1].candidates):
    assert rounds[1].prompts[i] == prompts.aggregation([rounds[0].tails[j] for j in row])


def test_delethink_resets_the_context_and_its_memory_does_not_grow_with_budget(model, prompts):
  config, params = model
  # The first chunk (BUDGET tokens after the question) is round 0's program; later chunks generate 4 tokens.
  chunking = Delethink(chunk_size=BUDGET, carry=2, keep_head=1)
  question = [prompts.initial()] * N
  run = lambda budget: rollout(params, config, question, budget=budget, key=KEY, chunking=chunking,
                               stop_tokens=())
  short = run(BUDGET + 4)
  compiles = generation._generate._cache_size()
  long = run(4 * (BUDGET + 4))
  assert generation._generate._cache_size() == compiles  # a 4x budget runs the same two programs
  np.testing.assert_array_equal(short.lengths, [BUDGET + 4] * N)
  np.testing.assert_array_equal(long.lengths, [4 * (BUDGET + 4)] * N)
  np.testing.assert_array_equal(long.tokens[:, :BUDGET + 4], short.tokens)

  # Chunk 2 is sampled from question + the first token + the last 2 tokens of chunk 1 (the context is reset),
  # with key fold_in(key, 1).
  contexts = [q + t[:1] + t[BUDGET - 2:BUDGET] for q, t in zip(question, long.tokens.tolist())]
  ids, mask = left_pad(contexts, len(question[0]) + 3, 0)
  chunk2 = generate(params, config, ids, prompt_mask=mask, max_new_tokens=4, key=jax.random.fold_in(KEY, 1),
                    stop_tokens=(), max_lengths=[4] * N, pad_id=0)
  np.testing.assert_array_equal(long.tokens[:, BUDGET:BUDGET + 4], chunk2.tokens)


def test_majority_vote():
  assert majority_vote(["3", None, "4", "4", "3"]) == "3"  # tie -> first seen
  assert majority_vote(["5", "4", "4"]) == "4"
  assert majority_vote([None, None]) is None


@pytest.mark.parametrize("make, message", [
    (lambda: RSAConfig(population=2, candidates=3, rounds=1, budget=4, tail=2), "distinct candidates"),
    (lambda: RSAConfig(population=2, candidates=1, rounds=-1, budget=4, tail=2), "rounds must be"),
    (lambda: RSAConfig(population=2, candidates=1, rounds=1, budget=0, tail=2), "budget must be"),
    (lambda: Delethink(chunk_size=4, carry=4), "carry < chunk_size"),
    (lambda: Delethink(chunk_size=4, carry=2, keep_head=3), "keep_head"),
])
def test_bad_settings_are_named(make, message):
  with pytest.raises(RSAConfigError, match=message):
    make()
