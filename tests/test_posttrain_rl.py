"""The RL loop (zaya_jax/posttrain/rl.py) and its prompts (rl_tasks.py) on a tiny random model."""

import dataclasses
import json
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from zaya_jax import ZayaConfig, init_params
from zaya_jax.api import forward, positions_from_mask
from zaya_jax.data import ByteTokenizer
from zaya_jax.loading import checkpoint_steps, load_model
from zaya_jax.posttrain import rl, rl_tasks, stages
from zaya_jax.rewards.code import code_reward
from zaya_jax.sampling import ByteChatTemplate, PromptBuilder, Sampling, reply_stop_tokens
from zaya_jax.sampling.rsa import Rollouts

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "posttrain")
RL_STAGES = ("rl_warmup", "rl_envs", "rl_math_code_ttc", "rl_code", "rl_behavior")
MODEL = ZayaConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=1, head_dim=16, moe_intermediate_size=16, num_experts=2,
                   router_hidden_size=8, bos_token_id=1, eos_token_id=2, pad_token_id=0, dtype="float32",
                   moe_impl="reference")
STEPS = 2
TOKENIZER, TEMPLATE = ByteTokenizer(), ByteChatTemplate()


def _config():
  config = rl.base_config()
  config.heldout = ml_collections.ConfigDict(dict(families=["arithmetic"], difficulties=[1], count=2, seed=0,
                                                  max_new_tokens=4, batch_size=2, evaluate_init=False))
  config = stages.with_checkpoint_model(config, MODEL, TOKENIZER)
  config.optim.name = "adamw"  # compiles faster than Muon; the loop does not depend on the optimiser
  config.train.update(steps=STEPS, prompts_per_step=4, rollouts_per_prompt=4, max_new_tokens=6, prompt_width=48,
                      checkpoint_every=1, keep_checkpoints=5)
  config.rewards.math.update(families=["arithmetic", "linear"], difficulties=[1])
  # Two plain + two aggregation prompts, two off-policy minibatches: every code path of a step.
  config.rl.update(aggregation_fraction=0.5, aggregation_tail=4, minibatches=2, degeneracy_canary=False)
  return config


def _first_byte_even(gold, text, num_tokens):
  """A reward a random model gets about half the time, so that groups have variance."""
  del gold, num_tokens
  hit = bool(text) and ord(text[0]) % 2 == 0
  return float(hit), hit


@pytest.fixture(scope="module")
def params():
  # Committed to the device as the loop's state is, so tests calling the sampler reuse its compiled program.
  return jax.device_put(init_params(MODEL, jax.random.key(0)), jax.devices()[0])


@pytest.fixture(scope="module")
def runs(params, tmp_path_factory):
  """(uninterrupted workdir, its final state, interrupted-then-resumed workdir, its final state)."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(rl_tasks, "_math_score", _first_byte_even)
    straight = str(tmp_path_factory.mktemp("straight"))
    state = rl.train_rl(_config(), straight, params, TOKENIZER, TEMPLATE)
    resumed = str(tmp_path_factory.mktemp("resumed"))
    first = rl.train_rl(_config(), resumed, params, TOKENIZER, TEMPLATE, stop_at=1)
    assert int(first.step) == 1
    state_resumed = rl.train_rl(_config(), resumed, params, TOKENIZER, TEMPLATE)
  return straight, state, resumed, state_resumed


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in f]


def test_rl_steps_update_the_params_and_log_the_metrics(runs, params):
  workdir, state, _, _ = runs
  records = _records(workdir)
  assert [r["step"] for r in records] == list(range(1, STEPS + 1))
  for r in records:
    assert set(r) >= {"reward_mean", "accuracy", "accuracy/math", "accuracy/rsa/math", "response_length",
                      "masked_fraction", "skipped_groups", "loss", "grad_norm", "lr", "load_max_min"}
    assert 0 <= r["masked_fraction"] <= 1 and 0 <= r["skipped_groups"] <= 1 and np.isfinite(r["loss"])
    assert r["updates"] == 2 or r["skipped_groups"] > 0
  assert sum(r["updates"] for r in records) > 0
  assert any(r["ratio_mean"] != 1.0 for r in records)  # the second minibatch of a step is off-policy
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, state.params)
  assert any(jax.tree.leaves(changed))
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.params))
  assert os.path.isfile(os.path.join(workdir, "rl.png"))
  loaded = load_model(workdir)  # the workdir is a checkpoint other stages can start from
  assert loaded.step == STEPS and loaded.config == MODEL and isinstance(loaded.tokenizer, ByteTokenizer)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), loaded.params, state.params)))


def test_rl_raises_a_learnable_reward(params, tmp_path):
  """The loop optimises its objective: a reward the policy controls through its first token climbs."""
  config = _config()
  config.train.update(steps=20, prompts_per_step=8, rollouts_per_prompt=8, checkpoint_every=100)
  config.rl.update(aggregation_fraction=0.0, minibatches=1)
  config.optim.lr = 1e-2
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(rl_tasks, "_math_score", _first_byte_even)
    rl.train_rl(config, str(tmp_path), params, TOKENIZER, TEMPLATE)
  accuracy = [r["accuracy"] for r in _records(str(tmp_path))]
  assert np.mean(accuracy[-5:]) > np.mean(accuracy[:5]) + 0.25, accuracy


def test_a_resumed_stage_repeats_the_uninterrupted_run(runs):
  straight, state, resumed, state_resumed = runs
  assert _records(resumed) == _records(straight)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state.params, state_resumed.params)))
  assert int(state_resumed.step) == STEPS


def test_passes_of_fewer_rollouts_make_the_same_update(runs, params, tmp_path):
  """A minibatch split into passes (rl.rollouts_per_pass) sums their gradients into the update of one pass."""
  config = _config()
  config.rl.rollouts_per_pass = 2
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(rl_tasks, "_math_score", _first_byte_even)
    state = rl.train_rl(config, str(tmp_path), params, TOKENIZER, TEMPLATE, stop_at=1)
  assert _records(str(tmp_path))[0]["updates"] == _records(runs[0])[0]["updates"] > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.params,
               load_model(runs[0], step=1).params)


def test_replay_redraws_the_prompts_and_rollouts_of_a_runs_steps(runs, params):
  """Checkpoint s - 1 replays step s's rollouts exactly (the run's logged plain accuracy)."""
  workdir = runs[0]
  config = rl.run_config(workdir)
  logged = [r["accuracy/math"] for r in _records(workdir)]
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(rl_tasks, "_math_score", _first_byte_even)
    first = rl.replay(config, params, TOKENIZER, TEMPLATE, [1, 2])
    second = rl.replay(config, load_model(workdir, step=1).params, TOKENIZER, TEMPLATE, [2])
  assert first.shape == (2, 2, 4) and second.shape == (1, 2, 4)
  assert first[0].mean() == logged[0] and second[0].mean() == logged[1]
  config.rewards.mix.envs = 0.5
  with pytest.raises(rl.RLConfigError, match="curriculum"):
    rl.replay(config, params, TOKENIZER, TEMPLATE, [1])


def test_run_config_fills_the_fields_a_run_predates(runs, tmp_path):
  with open(os.path.join(runs[0], "config.json")) as f:
    raw = json.load(f)
  del raw["rl"]["rollouts_per_pass"]
  with open(tmp_path / "config.json", "w") as f:
    json.dump(raw, f)
  config = rl.run_config(str(tmp_path))
  assert config.rl.rollouts_per_pass == rl.base_config().rl.rollouts_per_pass
  assert config.train.prompts_per_step == 4 and config.model.hidden_size == MODEL.hidden_size
  with open(tmp_path / "config.json", "w") as f:
    json.dump({**raw, "stage": "sft"}, f)
  with pytest.raises(rl.RLConfigError, match="not an RL stage"):
    rl.run_config(str(tmp_path))


def test_sigterm_finishes_the_step_saves_and_returns(runs, params, tmp_path):
  calls = []

  def score_then_signal(gold, text, num_tokens):
    if not calls:
      os.kill(os.getpid(), signal.SIGTERM)
    calls.append(text)
    return _first_byte_even(gold, text, num_tokens)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(rl_tasks, "_math_score", score_then_signal)
    state = rl.train_rl(_config(), str(tmp_path), params, TOKENIZER, TEMPLATE)
  assert int(state.step) == 1 and checkpoint_steps(str(tmp_path)) == [1]
  assert _records(str(tmp_path)) == _records(runs[0])[:1]


def test_old_logprobs_are_the_decoding_forwards_logprobs_of_the_sampled_tokens(params):
  """The training forward marks padding with segment ids (its gradient is finite, rl._response_logprobs);
  it must score a rollout's tokens exactly as the attention-mask forward of generation does."""
  sampler = rl_tasks.TaskSampler(_config().rewards, TOKENIZER, TEMPLATE, prompt_width=48, group_size=4)
  tasks = sampler.sample(1, 2, np.random.default_rng(0))
  sampling = Sampling(temperature=1.0, vocab_limit=TOKENIZER.vocab_size)  # the loop's: its compiled generate
  s = rl._sample(params, MODEL, tasks, 48, 4, 6, jax.random.key(0), sampling,
                 reply_stop_tokens(MODEL, TOKENIZER), TOKENIZER.pad_id)
  tokens, mask = jnp.asarray(s.tokens), jnp.asarray(s.mask)
  logp, counts = rl._response_logprobs(params, MODEL, tokens, mask, 48, 1.0, TOKENIZER.vocab_size)
  logits = forward(params, MODEL, tokens, attention_mask=mask, positions=positions_from_mask(mask))
  reference = jax.nn.log_softmax(logits[:, 47:-1, :TOKENIZER.vocab_size], axis=-1)
  reference = jnp.take_along_axis(reference, tokens[:, 48:, None], axis=-1)[..., 0]
  real = np.asarray(mask[:, 48:]) == 1
  assert real.sum() == s.lengths.sum() and real[:, 0].all()
  np.testing.assert_allclose(np.asarray(logp)[real], np.asarray(reference)[real], atol=1e-5)
  assert float(counts.sum()) == MODEL.num_hidden_layers * int(mask.sum())


def _fake_groups(G=4, T=5):
  tasks = [rl_tasks.Task("math", (1, 4, 20, 5, 8, 6), lambda text, n: (0.0, False), question=f"q{i}") for i in range(3)]
  tasks[1] = dataclasses.replace(tasks[1], question=None)
  tokens = np.arange(3 * G * T, dtype=np.int32).reshape(3 * G, T) % 200 + 16
  result = Rollouts(tokens, np.full(3 * G, T), np.zeros(3 * G, bool))
  ids, mask = np.zeros((3 * G, 8), np.int32), np.ones((3 * G, 8), np.int32)
  return rl.GroupSet(tasks, 8, G, result, ids, mask), tokens


def test_aggregation_prompts_hold_tails_of_distinct_rollouts_of_one_prompt():
  plain, tokens = _fake_groups()
  sources, tails = rl._aggregation_sources(plain, 2, candidates=2, tail=3, rng=np.random.default_rng(0))
  assert sorted(t.question for t in sources) == ["q0", "q2"]  # the prompt without a question is never chosen
  for task, chosen in zip(sources, tails):
    p = plain.tasks.index(task)
    rows = [int(np.flatnonzero((tokens[:, -3:] == np.asarray(t)).all(1))[0]) for t in chosen]
    assert len(set(rows)) == 2 and all(p * 4 <= r < (p + 1) * 4 for r in rows)
  agg = rl_tasks.aggregation_tasks(sources, tails, TOKENIZER, TEMPLATE)
  width = rl_tasks.aggregation_width(TOKENIZER, TEMPLATE, 8, 2, 3)
  for task, source, chosen in zip(agg, sources, tails):
    assert list(task.ids) == PromptBuilder(TOKENIZER, TEMPLATE, source.question).aggregation(chosen)
    assert task.source == "rsa/math" and task.score is source.score and len(task.ids) <= width
  with pytest.raises(rl.RLConfigError, match="as many plain prompts with a question"):
    rl._aggregation_sources(plain, 3, candidates=2, tail=3, rng=np.random.default_rng(0))


@pytest.mark.parametrize("mask_truncated", [False, True])
def test_training_weights_drop_groups_without_variance_and_optionally_truncated_rollouts(mask_truncated):
  s, _ = _fake_groups()
  s.rewards = np.asarray([[1, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]], np.float32)
  s.correct = s.rewards > 0
  s.rollouts.stopped[:] = True
  s.rollouts.stopped[[1, 9]] = False  # cut at the budget: group 0 rollout 1, group 2 rollout 1
  config = _config()
  config.rl.mask_truncated = mask_truncated
  batch = rl._training_batch(s, config.rl, rl.objectives.LengthReward(), {})
  expected = np.repeat([1.0, 0.0, 1.0], 4)
  if mask_truncated:
    expected[[1, 9]] = 0.0
  np.testing.assert_array_equal(batch["weights"], expected)
  np.testing.assert_allclose(batch["advantages"], [3, -1, -1, -1, 0, 0, 0, 0, -1, 3, -1, -1])  # MaxRL, r̄ = 1/4


def test_min_correct_drops_groups_with_fewer_correct_rollouts():
  s, _ = _fake_groups()
  s.rewards = np.asarray([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 1]], np.float32)
  s.correct = s.rewards > 0
  config = _config()
  config.rl.min_correct = 2
  batch = rl._training_batch(s, config.rl, rl.objectives.LengthReward(), {})
  np.testing.assert_array_equal(batch["weights"], np.repeat([0.0, 1.0, 1.0], 4))
  np.testing.assert_array_equal(s.kept, [False, True, True])


def test_minibatches_hold_their_share_of_kept_groups_cut_to_a_power_of_two():
  kept = np.asarray([0, 1, 0, 1, 1, 0, 0, 0], bool)  # kept-first order: 1, 3, 4, then 0, 2, 5, 6, 7
  one, = rl.minibatch_groups(kept, 1)
  np.testing.assert_array_equal(one, [1, 3, 4, 0])  # 3 kept -> 4 groups
  first, second = rl.minibatch_groups(kept, 2)
  np.testing.assert_array_equal(first, [1, 3, 4, 0])  # the first half of the order: 3 kept -> 4
  assert len(second) == 0  # only dropped groups: skipped
  halves = rl.minibatch_groups(np.ones(8, bool), 2)
  np.testing.assert_array_equal(np.concatenate(halves), np.arange(8))
  one, = rl.minibatch_groups(np.asarray([0, 0, 1, 0, 0], bool), 1)
  np.testing.assert_array_equal(one, [2])
  assert [len(g) for g in rl.minibatch_groups(np.asarray([1] * 5 + [0] * 3, bool), 1)] == [8]  # 5 -> 8


def test_allocate_splits_prompts_by_largest_remainder():
  assert rl_tasks.allocate(8, {"math": 1.0, "code": 1.0, "envs": 0.0}) == {"math": 4, "code": 4}
  assert rl_tasks.allocate(7, {"math": 0.5, "code": 0.25, "behavior": 0.25}) == {"math": 3, "code": 2, "behavior": 2}
  with pytest.raises(rl_tasks.TaskError, match="rewards.mix"):
    rl_tasks.allocate(4, {"chess": 1.0})
  with pytest.raises(rl_tasks.TaskError, match="rewards.mix"):
    rl_tasks.allocate(4, {"math": 0.0})


def test_a_prompt_wider_than_the_prompt_width_is_named():
  sampler = rl_tasks.TaskSampler(_config().rewards, TOKENIZER, TEMPLATE, prompt_width=10, group_size=2)
  with pytest.raises(rl_tasks.TaskError, match="more than train.prompt_width=10"):
    sampler.sample(1, 1, np.random.default_rng(0))


CORRECT_PROGRAMS = {
    "sum_two": "print(sum(map(int, input().split())))",
    "sort_list": "input()\nprint(*sorted(map(int, input().split())))",
    "fibonacci": "n = int(input())\na, b = 0, 1\nfor _ in range(n):\n  a, b = b, a + b\nprint(a)",
}


@pytest.mark.parametrize("template", sorted(CORRECT_PROGRAMS))
def test_code_tasks_accept_a_correct_program_and_reject_a_wrong_one(template):
  question, tests = rl_tasks.code_problem(template, 2, np.random.default_rng(1))
  assert question.startswith(rl_tasks.CODE_TEMPLATES[template][0]) and len(tests) == 2
  reply = lambda code: f"Here it is:\n```python\n{code}\n```"
  assert code_reward(reply(CORRECT_PROGRAMS[template]), tests, time_limit_s=5.0) == 1.0
  assert code_reward(reply("print(0)"), tests, time_limit_s=5.0) == 0.0


@pytest.mark.parametrize("change, message", [
    (dict(minibatches=3), "must divide"),
    (dict(aggregation_fraction=0.75), "need as many plain prompts"),
    (dict(advantage="ppo"), "rl.advantage must be one of"),
    (dict(min_correct=5), r"rl.min_correct must lie in \[0, G=4\]"),
    (dict(negative_weight=-0.5), r"rl.negative_weight must lie in \[0, 1\]"),
])
def test_config_errors_are_named(change, message):
  config = _config()
  config.rl.update(change)
  with pytest.raises(rl.RLConfigError, match=message):
    rl._check(config)


@pytest.mark.parametrize("name", RL_STAGES)
def test_stage_configs_are_valid(name):
  config = stages.load_config_file(os.path.join(CONFIG_DIR, f"{name}.py"))
  assert config.stage == "rl" and "model" not in config
  n_plain, n_agg = rl._check(config)
  kinds = rl_tasks.allocate(n_plain, config.rewards.mix.to_dict())
  assert sum(kinds.values()) == n_plain and (n_agg > 0) == (name in ("rl_math_code_ttc", "rl_code"))
  assert config.rl.advantage == ("grpo_std" if name == "rl_behavior" else "maxrl")


def test_behavior_reward_gates_correctness_on_the_format_and_adds_the_overlong_penalty():
  score = lambda text, n: rl_tasks._behavior_score("7", 100, text, n)
  assert score("so \\boxed{7}", 10) == (1.0, True)
  assert score("so \\boxed{8}", 10) == (0.0, False)
  assert score("\\boxed{3} or \\boxed{7}", 10) == (0.0, False)  # two answers: the format check fails
  assert score("so \\boxed{7}", 95) == (1.0 + (80 - 95) / 20, True)  # DAPO: margin budget/5 = 20 tokens


def test_environment_prompts_follow_and_feed_the_curriculum():
  config = _config()
  config.rewards.mix.update(math=0.0, envs=1.0)
  config.rewards.envs.names = ["digit_sum", "list_max"]
  sampler = rl_tasks.TaskSampler(config.rewards, TOKENIZER, TEMPLATE, prompt_width=200, group_size=4)
  tasks = sampler.sample(1, 2, np.random.default_rng(0))
  assert sorted(t.env for t in tasks) == [("digit_sum", 0), ("list_max", 0)]
  for task in tasks:
    answer = task.score.args[1]
    assert task.source == f"envs/{task.env[0]}" and task.score(f"\\boxed{{{answer}}}", 5) == (1.0, True)
    assert task.score("\\boxed{nope}", 5) == (0.0, False)
  state = sampler.curriculum_state()
  sampler.update_curriculum(tasks, np.asarray([[True] * 4, [False] * 4]))
  solved = [t.env[0] for t in tasks][0]
  assert sampler.curriculum.difficulty == {solved: 1, ({"digit_sum", "list_max"} - {solved}).pop(): 0}
  sampler.load_curriculum_state(state)
  assert sampler.curriculum_state() == state
