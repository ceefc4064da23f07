"""SFT (zaya_jax/posttrain/sft_data.py, sft.py): assistant-only targets, packing, aggregation examples, JSONL
errors, and a few steps on a tiny random model that lower the loss and resume exactly."""

import json
import os
import shutil

import grain
import jax
import ml_collections
import numpy as np
import pytest

import configs.posttrain.sft
from zaya_jax import ZayaConfig, forward, init_params, save_hf_checkpoint
from zaya_jax.data import ByteTokenizer, check_answer, make_record, split_of
from zaya_jax.loading import load_model
from zaya_jax.posttrain import sft, sft_data, stages
from zaya_jax.sampling import AggregationTemplate, ByteChatTemplate, JinjaChatTemplate, PromptBuilder
from zaya_jax.train import reporting

TOK = ByteTokenizer()
BOS, SYS, USER, ASST, THINK, EOT = 1, 3, 4, 5, 6, 8  # ByteTokenizer ids of <bos>, the role markers, <|end_of_turn|>


def _bytes(text):
  return [b + 16 for b in text.encode()]


def test_byte_template_targets_are_the_assistant_replies_and_their_end_markers():
  messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
              {"role": "assistant", "content": "ok"}, {"role": "user", "content": "q"},
              {"role": "assistant", "content": "a!"}]
  ex = sft_data.encode_chat(TOK, ByteChatTemplate(), messages)
  expected = ([BOS, SYS, 99, EOT, USER, 120, 121, EOT, ASST, 127, 123, EOT, USER, 129, EOT, ASST, 113, 49, EOT])
  assert ex["tokens"].tolist() == expected == [BOS, SYS, *_bytes("S"), EOT, USER, *_bytes("hi"), EOT, ASST,
                                               *_bytes("ok"), EOT, USER, *_bytes("q"), EOT, ASST, *_bytes("a!"), EOT]
  # targets: "ok" + its <|end_of_turn|> (positions 9-11) and "a!" + its marker (16-18); never a role marker
  assert np.flatnonzero(ex["targets"]).tolist() == [9, 10, 11, 16, 17, 18]


@pytest.mark.parametrize("think", [False, True])
def test_one_exchange_starts_with_the_sampling_prompt(think):
  template = ByteChatTemplate(think=think)
  ex = sft_data.encode_chat(TOK, template, [{"role": "user", "content": "1+1?"},
                                            {"role": "assistant", "content": "2"}])
  prompt = template.user_prompt(TOK, ["1+1?"])
  assert ex["tokens"].tolist() == prompt + _bytes("2") + [EOT]
  assert ex["targets"].tolist() == [0] * len(prompt) + [1, 1]


def test_jinja_template_targets_and_spliced_tokens():
  template = JinjaChatTemplate("{% for m in messages %}[{{ m.role }}]{{ m.content }}</t>{% endfor %}"
                               "{% if add_generation_prompt %}[assistant]{% endif %}")
  tail = [TOK.token_id("<think>"), 100]  # token ids spliced verbatim, as aggregation tails are
  messages = [{"role": "user", "content": ["x", tail, "y"]}, {"role": "assistant", "content": "z"},
              {"role": "user", "content": "w"}, {"role": "assistant", "content": "v"}]
  ex = sft_data.encode_chat(TOK, template, messages)
  first = template.user_prompt(TOK, ["x", tail, "y"])
  assert first == _bytes("[user]x") + tail + _bytes("y</t>[assistant]")
  second = _bytes("[user]w</t>[assistant]")
  assert ex["tokens"].tolist() == first + _bytes("z</t>") + second + _bytes("v</t>")
  targets = [0] * len(first) + [1] * 5 + [0] * len(second) + [1] * 5
  assert ex["targets"].tolist() == targets


def test_loss_mask_counts_only_next_tokens_that_are_targets_of_the_same_segment():
  packed = {"tokens": np.array([[1, 10, 11, 12, 1, 13, 14, 0]]),
            "targets": np.array([[0, 0, 1, 1, 0, 0, 1, 0]]),
            "tokens_segment_ids": np.array([[1, 1, 1, 1, 2, 2, 2, 0]]),
            "tokens_positions": np.array([[0, 1, 2, 3, 0, 1, 2, 0]])}
  batch = sft_data.to_batch(packed, pad_id=0)
  # t predicts t+1: t=1 -> 11 (target), t=2 -> 12 (target), t=3 -> next segment's <bos> (no), t=5 -> 14 (target)
  assert batch["loss_mask"].tolist() == [[0, 1, 1, 0, 0, 1, 0, 0]]
  assert batch["positions"].tolist() == packed["tokens_positions"].tolist()


def tiny_model():
  """(config, params) of a random one-block model (full attention) on the byte tokenizer."""
  config = ZayaConfig(vocab_size=TOK.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, moe_intermediate_size=32, num_experts=2,
                      router_hidden_size=8, bos_token_id=BOS, eos_token_id=2, pad_token_id=0)
  # A raw PRNGKey, as the trainer's init uses: both share one compiled init.
  return config, init_params(config, jax.random.PRNGKey(0))


def write_chat_jsonl(path) -> str:
  path.write_text("\n".join(json.dumps({"prompt": f"Say {w}.", "response": f"{w}!"})
                            for w in ("hello", "yes", "no", "maybe")) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def model():
  return tiny_model()


def test_packing_keeps_documents_apart(model):
  """Packed rows: each example one segment with positions from 0, and the model's logits on a segment are
  those of the example alone in its own row (nothing attends across examples)."""
  config, params = model
  examples = [sft_data.encode_chat(TOK, ByteChatTemplate(), sft_data.problem_messages(make_record(f, 1, 0, i)))
              for i, f in enumerate(["arithmetic", "linear", "modular", "word", "linear"])]
  seq_len = 200
  rows = sft_data.pack(grain.MapDataset.source(examples).to_iter_dataset(), seq_len, num_bins=2, seed=0,
                       shuffle_bins=False)
  batch = sft_data.to_batch(next(iter(rows.batch(2, drop_remainder=True))), pad_id=0)
  alone = np.zeros((len(examples), seq_len), np.int32)
  for k, ex in enumerate(examples):
    alone[k, :len(ex["tokens"])] = ex["tokens"]
  logits = np.asarray(forward(params, config, np.concatenate([batch["tokens"], alone]),  # one compiled shape
                              segment_ids=np.concatenate([batch["segment_ids"], (alone > 0).astype(np.int32)]),
                              positions=np.concatenate([batch["positions"], np.tile(np.arange(seq_len), (5, 1))])))
  found = 0
  for b in range(2):
    for seg in range(1, batch["segment_ids"][b].max() + 1):
      where = np.flatnonzero(batch["segment_ids"][b] == seg)
      assert (np.diff(where) == 1).all() and batch["positions"][b, where].tolist() == list(range(len(where)))
      (k,) = [k for k, ex in enumerate(examples) if ex["tokens"].tolist() == batch["tokens"][b, where].tolist()]
      np.testing.assert_allclose(logits[b, where], logits[2 + k, :len(where)], atol=2e-5)
      mask = batch["loss_mask"][b, where]
      assert mask[:-1].tolist() == examples[k]["targets"][1:].tolist() and mask[-1] == 0
      found += 1
  assert found >= 3


def test_eval_batches_are_heldout_problems_in_a_fixed_order():
  sft_cfg = configs.posttrain.sft.get_config().sft.to_dict()
  first, again = (next(sft_data.eval_iterator(sft_cfg, TOK, ByteChatTemplate(), seq_len=512, batch_size=2))
                  for _ in range(2))
  jax.tree.map(np.testing.assert_array_equal, first, again)
  text = TOK.decode(first["tokens"][0].tolist())
  problem = text.split("<|user|>")[1].split("<|end_of_turn|>")[0]
  assert split_of(problem) == "heldout"


@pytest.mark.parametrize("wrong_fraction", [0.0, 0.5, 1.0])
def test_aggregation_examples_hold_c_tails_in_the_rsa_format(wrong_fraction):
  C, tau = 4, 20
  for i, family in enumerate(["arithmetic", "linear", "modular", "word"]):
    record = make_record(family, 2, 0, i)
    messages = sft_data.aggregation_messages(record, TOK, np.random.default_rng(i), candidates=C, tail=tau,
                                             wrong_fraction=wrong_fraction)
    tails = [s for s in messages[0]["content"] if not isinstance(s, str)]
    assert len(tails) == C and all(0 < len(t) <= tau for t in tails)
    correct_tail = TOK.encode(record["solution"])[-tau:]
    n_correct = sum(t == correct_tail for t in tails)
    assert all(t == correct_tail or not check_answer(record, TOK.decode(t)) for t in tails)
    if wrong_fraction in (0.0, 1.0):
      assert n_correct == (C if wrong_fraction == 0.0 else 0)
    ex = sft_data.encode_chat(TOK, ByteChatTemplate(), messages)
    prompt = PromptBuilder(TOK, ByteChatTemplate(), record["problem"], AggregationTemplate()).aggregation(tails)
    assert ex["tokens"].tolist() == prompt + TOK.encode(record["solution"]) + [EOT]
    assert ex["targets"].tolist() == [0] * len(prompt) + [1] * (len(ex["tokens"]) - len(prompt))


def test_corrupted_solutions_have_wrong_answers():
  for i in range(40):
    record = make_record(["arithmetic", "linear", "modular", "word"][i % 4], 1 + i % 5, 0, i)
    wrong = sft_data.corrupt_solution(record, np.random.default_rng(i))
    assert wrong != record["solution"] and not check_answer(record, wrong)


@pytest.mark.parametrize("line, problem", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"text": "x"}', "needs 'messages', or 'prompt' and 'response'"),
    ('{"prompt": "x", "response": 3}', "must be strings"),
    ('{"messages": []}', "non-empty list"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "has role 'bot'"),
    ('{"messages": [{"role": "assistant", "content": 5}]}', "not a string"),
])
def test_malformed_jsonl_is_named_by_file_and_line(tmp_path, line, problem):
  path = tmp_path / "sft.jsonl"
  good = json.dumps({"prompt": "p", "response": "r"})
  path.write_text(f"{good}\n\n{line}\n")
  with pytest.raises(sft_data.SFTDataError, match=f"{path}:3: .*{problem}"):
    sft_data.read_jsonl(str(path))


def test_jsonl_examples(tmp_path):
  path = tmp_path / "sft.jsonl"
  path.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n" + json.dumps(
      {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"}]}) + "\n")
  read = sft_data.read_jsonl(str(path))
  assert [w for w, _ in read] == [f"{path}:1", f"{path}:2"]
  assert read[0][1] == [{"role": "user", "content": "p"}, {"role": "assistant", "content": "r"}]
  sft_cfg = {"mixture": {"jsonl": 1.0}, "jsonl": {"paths": [str(path)]}, "num_packing_bins": 2}
  datasets = sft_data.example_datasets(sft_cfg, TOK, ByteChatTemplate(), seq_len=64)
  assert [int(datasets["jsonl"][k]["targets"].sum()) for k in range(2)] == [2, 2]  # "r"/"a" + end marker
  with pytest.raises(sft_data.SFTDataError, match=f"{path}:2: the example has 10 tokens, more than train.seq_len=9"):
    sft_data.example_datasets(sft_cfg, TOK, ByteChatTemplate(), seq_len=9)


# ---------------------------------------------------------------------------------------------------------
# Training on a tiny random model.

STEPS = 8


def sft_test_config(jsonl_path: str) -> ml_collections.ConfigDict:
  """configs/posttrain/sft.py at toy shapes: short rows of problems and JSONL examples, a high learning rate."""
  config = configs.posttrain.sft.get_config()
  config.optim.update(name="adamw", lr=1e-2, warmup_steps=1)
  config.train.update(steps=STEPS, batch_size=2, seq_len=256, log_every=1, eval_every=0, checkpoint_every=4,
                      keep_checkpoints=3)
  config.sft.mixture = dict(problems=0.5, aggregation=0.0, jsonl=0.5)
  config.sft.jsonl.paths = [jsonl_path]
  config.sft.problems.difficulties = [1]
  config.heldout.update(count=4, batch_size=4, max_new_tokens=8, families=["arithmetic", "linear"], samples=2)
  return config


@pytest.fixture(scope="module")
def init_checkpoint(model, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("init"))
  save_hf_checkpoint(path, *model)
  return path


@pytest.fixture(scope="module")
def jsonl_path(tmp_path_factory):
  return write_chat_jsonl(tmp_path_factory.mktemp("jsonl") / "chat.jsonl")


def _losses(workdir):
  return {r["step"]: r["loss"] for r in reporting.read_metrics(workdir) if "loss" in r}


def test_sft_lowers_the_loss_and_resumes_exactly(model, init_checkpoint, jsonl_path, tmp_path):
  workdir = str(tmp_path / "sft")
  config = sft_test_config(jsonl_path)
  params = sft.run(config, workdir, init_checkpoint)
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, STEPS + 1)) and losses[STEPS] < losses[1] - 0.5
  summary = json.load(open(os.path.join(workdir, stages.SUMMARY_FILE)))
  assert summary["stage"] == "sft" and summary["heldout"]["count"] == 4 and summary["heldout_init"]["count"] == 4
  assert len(summary["heldout"]["sampled"]["per_problem"]) == 4 and summary["heldout"]["sampled"]["k"] == 2
  assert set(summary["heldout_change"]) == {"change", "interval_95", "sampled"}
  loaded = load_model(workdir)  # the stage's workdir is a checkpoint for the next stage
  assert loaded.config == model[0] and loaded.step == STEPS and isinstance(loaded.chat_template, ByteChatTemplate)
  jax.tree.map(np.testing.assert_array_equal, loaded.params, params)
  # Lose the last checkpoint and the summary, as a run killed after step 4 would: the rerun resumes from
  # step 4 and recomputes steps 5..8 bit for bit.
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(STEPS)))
  os.remove(os.path.join(workdir, stages.SUMMARY_FILE))
  resumed = sft.run(config, workdir, init_checkpoint)
  assert _losses(workdir) == losses
  jax.tree.map(np.testing.assert_array_equal, resumed, params)
  assert stages.is_finished(workdir)
