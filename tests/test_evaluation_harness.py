"""Evaluation runs on a tiny random checkpoint: the batched driver against `markovian_rsa`, per-problem records,
token accounting, the command line in-process (same programs: no recompilation), summaries and the report."""

import dataclasses
import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from absl import app, flags

from zaya_jax import ZayaConfig, init_params, save_hf_checkpoint
from zaya_jax.data import ByteTokenizer
from zaya_jax.evaluation import (Graded, PlainTemplate, batched_rsa, evaluate, get_benchmark, get_preset,
                                 load_problems, markdown_table, plot_accuracy_vs_tokens, problem_scores,
                                 round_widths, run_summary, scoring, summarize)
from zaya_jax.loading import load_model
from zaya_jax.sampling import PromptBuilder, generation, markovian_rsa, reply_stop_tokens

N, C, T, BUDGET, TAIL = 4, 2, 1, 8, 4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One question length for every problem: all runs below share two compiled programs (round 0, aggregation).
LINES = [{"id": i, "problem": f"{a}+{b}=?", "answer": str(a + b)} for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 3)])]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  config = ZayaConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, moe_intermediate_size=16,
                      num_experts=2, router_hidden_size=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  directory = str(tmp_path_factory.mktemp("tiny"))
  save_hf_checkpoint(directory, config, init_params(config, jax.random.key(0)))
  data = os.path.join(directory, "bench.jsonl")
  with open(data, "w") as f:
    f.writelines(json.dumps(line) + "\n" for line in LINES)
  return directory, data


@pytest.fixture(scope="module")
def model(checkpoint):
  return load_model(checkpoint[0])


@pytest.fixture(scope="module")
def problems(checkpoint):
  return load_problems(checkpoint[1], "math")


PRESET = dataclasses.replace(get_preset("toy_rsa"), name="test", samples=N, candidates=C, rounds=T, budget=BUDGET,
                             tail=TAIL)


@pytest.fixture(scope="module")
def rsa_records(model, problems):
  return evaluate(model, "math", problems, PRESET, seed=7)


def test_one_problem_per_batch_is_markovian_rsa(model, problems):
  builder = PromptBuilder(model.tokenizer, model.chat_template, problems[1].question)
  rsa = PRESET.rsa_config()
  rsa = dataclasses.replace(rsa, sampling=dataclasses.replace(rsa.sampling, vocab_limit=ByteTokenizer.vocab_size))
  key, stop = jax.random.fold_in(jax.random.key(7), 1), reply_stop_tokens(model.config, model.tokenizer)
  expected = list(markovian_rsa(model.params, model.config, builder, rsa, key, stop_tokens=stop))
  got = [r for (r,) in batched_rsa(model.params, model.config, [builder], rsa, [key],
                                   widths=round_widths([builder], rsa), stop_tokens=stop)]
  assert len(got) == T + 1
  for e, g in zip(expected, got):
    assert g.prompts == e.prompts and g.tails == e.tails
    np.testing.assert_array_equal(g.rollouts.tokens, e.rollouts.tokens)
    np.testing.assert_array_equal(g.rollouts.lengths, e.rollouts.lengths)
    if e.candidates is not None:
      np.testing.assert_array_equal(g.candidates, e.candidates)


def test_records_hold_every_round_and_count_generated_tokens(model, problems, rsa_records):
  assert [r["id"] for r in rsa_records] == ["0", "1", "2"]
  for record, problem in zip(rsa_records, problems):
    assert record["gold"] == problem.answer and len(record["rounds"]) == T + 1
    assert record["generated_tokens"] == sum(sum(r["tokens"]) for r in record["rounds"])
    assert len(record["texts"]) == N
    for r in record["rounds"]:
      assert len(r["answers"]) == len(r["correct"]) == len(r["clusters"]) == N
      assert all(0 < t <= BUDGET for t in r["tokens"])
    aggregated = np.asarray(record["rounds"][1]["aggregated"])
    assert aggregated.shape == (N, C) and all(len(set(row)) == C for row in aggregated.tolist())
  # Problem 1 of the run is `markovian_rsa` with key fold_in(key(7), 1) (previous test): its final texts.
  assert rsa_records[0]["texts"] != rsa_records[1]["texts"]


def test_single_rollout_is_round_zero_and_batching_is_deterministic(model, problems, rsa_records):
  single = dataclasses.replace(get_preset("toy_single"), samples=N, budget=BUDGET)
  one = evaluate(model, "math", problems, single, seed=7, keep_texts=False)
  for s, r in zip(one, rsa_records):
    assert s["rounds"] == [r["rounds"][0]]
  # Two problems of N/2 samples per batch: the same rows per batch, so the same program.
  half = dataclasses.replace(single, samples=N // 2)
  two = [evaluate(model, "math", problems, half, seed=7, problems_per_batch=2) for _ in range(2)]
  assert two[0] == two[1] and len(two[0]) == 3  # the last batch is filled up and trimmed
  assert all(len(r["rounds"][0]["tokens"]) == N // 2 for r in two[0])
  assert two[0][0]["texts"] != two[0][1]["texts"]


def test_truncated_texts_are_graded_and_whole_texts_kept(model, problems, monkeypatch):
  single = dataclasses.replace(get_preset("toy_single"), samples=N, budget=BUDGET)
  (whole,) = evaluate(model, "math", problems[:1], single, seed=7)
  cut = whole["texts"][0][2:4]  # a substring of the first sample's text
  graded = []
  monkeypatch.setattr(scoring, "grade", lambda kind, problem, text: graded.append(text) or Graded(None, False))
  (record,) = evaluate(model, "math", problems[:1], single, seed=7, truncate_at=cut)
  assert graded[0] == whole["texts"][0].split(cut, 1)[0] and len(graded[0]) <= 2
  assert record["texts"] == whole["texts"] and record["generated_tokens"] == whole["generated_tokens"]


def test_code_records_carry_sandbox_verdicts_and_no_majority(model, problems):
  single = dataclasses.replace(get_preset("toy_single"), samples=N, budget=BUDGET)
  code = [dataclasses.replace(p, answer=None, tests=({"input": "", "output": "1\n"},)) for p in problems[:2]]
  records = evaluate(model, "code", code, single, seed=7)
  for record in records:
    (r,) = record["rounds"]
    assert r["status"] == ["no_code"] * N and r["clusters"] is None and r["correct"] == [False] * N
  assert "maj@4" not in summarize(records, resamples=10)["scores"]


def test_plain_template_is_the_corpus_format():
  ids = PlainTemplate().user_prompt(ByteTokenizer(), ["1+1=", [20, 21]])
  assert ids == [1] + ByteTokenizer().encode("Problem: 1+1=") + [20, 21] + ByteTokenizer().encode("\nSolution:")


def _round(correct, answers, tokens):
  labels = {a: i for i, a in enumerate(dict.fromkeys(a for a in answers if a is not None))}
  return {"correct": correct, "answers": answers, "tokens": tokens,
          "clusters": [None if a is None else labels[a] for a in answers]}


def test_scores_and_summary_on_hand_built_records():
  scores = problem_scores(_round([True, False, False, True], ["3", "4", None, "3"], [5, 5, 5, 5]), (1, 2, 8))
  # maj@2 by hand over the 6 pairs: {3,3} 1, {3,4} twice 1/2, {3,None} twice 1, {4,None} 0 -> 4/6.
  assert scores == {"avg@4": 0.5, "pass@1": 0.5, "pass@2": pytest.approx(5 / 6), "maj@2": pytest.approx(4 / 6),
                    "maj@4": 1.0}
  records = [{"generated_tokens": 30, "rounds": [_round([True, True], ["1", "1"], [5, 5]),
                                                  _round([True, False], ["1", "2"], [10, 10])]},
             {"generated_tokens": 10, "rounds": [_round([False, False], [None, "7"], [1, 1]),
                                                  _round([False, True], ["6", "5"], [4, 4])]}]
  final, first = summarize(records, resamples=50), summarize(records, round_index=0, resamples=50)
  assert final["scores"]["avg@2"]["mean"] == 50.0 and final["scores"]["maj@2"]["mean"] == 50.0
  assert first["scores"]["avg@2"]["mean"] == 50.0 and first["scores"]["maj@2"]["mean"] == 50.0
  assert final["curve"] == [{"round": 0, "tokens_per_problem": 6.0, "avg": 50.0},
                            {"round": 1, "tokens_per_problem": 20.0, "avg": 50.0}]
  assert (final["generated_tokens_per_problem"], first["generated_tokens_per_problem"]) == (20.0, 6.0)
  assert (final["tokens_per_sample"], first["tokens_per_sample"]) == (7.0, 3.0)


def test_report_table_and_plot(tmp_path, rsa_records):
  rsa = run_summary(get_benchmark("aime25"), get_preset("rsa_16k"), summarize(rsa_records, resamples=50))
  single = run_summary(get_benchmark("aime25"), get_preset("single_avg64"),
                       summarize(rsa_records, round_index=0, resamples=50))
  table = markdown_table([rsa, single])
  assert "| AIME'25 | rsa_16k | T=2 N=16 C=4 β=16384 τ=4096 final=40960 | 3 |" in table
  assert "88.8 (report Table XII (pre-behavioral checkpoint))" in table and "/ 440K |" in table
  assert "88.3 (report Table XI" in table and "| avg@4 " in table and "| maj@4 " in table
  assert plot_accuracy_vs_tokens([rsa, single], str(tmp_path / "p.png")) == str(tmp_path / "p.png")
  assert os.path.getsize(tmp_path / "p.png") > 1000
  assert plot_accuracy_vs_tokens([single], str(tmp_path / "q.png")) is None


def _load_script(name, path):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_command_line_writes_results_summary_and_report(checkpoint, tmp_path, rsa_records):
  cli = _load_script("evaluate_cli", "experiments/evaluate.py")
  out = tmp_path / "eval"
  argv = ["evaluate", "--benchmark=math", f"--data={checkpoint[1]}", f"--checkpoint={checkpoint[0]}",
          f"--output={out}", "--mode=rsa", f"--samples={N}", f"--candidates={C}", f"--rounds={T}",
          f"--budget={BUDGET}", f"--tail={TAIL}", "--final_budget=0", "--prefill_chunk=0", "--seed=7",
          "--bootstrap=50"]
  try:
    flags.FLAGS(argv)
    compiled = generation._generate._cache_size()
    cli.main(argv[:1])
    assert generation._generate._cache_size() == compiled  # in-process: evaluate()'s programs are reused
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv[:1] + ["--benchmark=math", f"--checkpoint={checkpoint[0]}", f"--output={out}"])
    with pytest.raises(app.UsageError, match="needs --data"):
      cli.main(argv[:1])
  finally:
    flags.FLAGS.unparse_flags()
  run = out / "math__rsa_16k_custom"
  with open(run / "results.jsonl") as f:
    assert [json.loads(line) for line in f] == rsa_records  # the same run as evaluate() with the same seed
  summary = json.loads((run / "summary.json").read_text())
  assert summary["settings"] == f"T={T} N={N} C={C} β={BUDGET} τ={TAIL}" and summary["published"] == []
  assert summary["scores"] == summarize(rsa_records, resamples=50, seed=7)["scores"]
  assert "| math (custom) | rsa_16k_custom |" in (out / "report.md").read_text()
  assert (out / "accuracy_vs_tokens.png").exists()


def test_toy_eval_table(rsa_records):
  toy_eval = _load_script("toy_eval", "benchmarks/toy_eval.py")
  table = toy_eval.table(rsa_records, N)
  single, rsa = summarize(rsa_records, round_index=0), summarize(rsa_records)
  s = single["scores"][f"maj@{N}"]
  assert f"| majority vote (round 0) | maj@{N} | {s['mean']:.1f} [{s['low']:.1f}, {s['high']:.1f}] |" in table
  assert f"| Markovian RSA (round {T}) | avg@{N} | {rsa['scores'][f'avg@{N}']['mean']:.1f}" in table
  tagged = [r | {"tags": {"difficulty": 1 + i % 2}} for i, r in enumerate(rsa_records)]
  assert [line.split(" | ")[:2] for line in toy_eval.by_difficulty(tagged, N).splitlines()[2:]] == [
      ["| 1", "2"], ["| 2", "1"]]
