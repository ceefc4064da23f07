"""Benchmark JSONL schemas (valid lines, errors naming file, line and field), toy benchmark, published numbers,
presets."""

import json

import pytest

from zaya_jax.data import check_answer, make_record
from zaya_jax.evaluation import (BENCHMARKS, PRESETS, PUBLISHED, BenchmarkError, PresetError, Preset,
                                 get_preset, load_problems, published, toy_problems)
from zaya_jax.sampling import Sampling

MATH = {"id": 1, "problem": "Find x.", "answer": 12}
CHOICE = {"id": "g1", "problem": "Which?", "choices": ["a", "b", "c"], "answer": "c"}
CODE = {"id": "c1", "problem": "Echo.", "tests": [{"input": "1\n", "output": "1\n"}],
        "public_tests": [{"input": "2\n", "output": "2\n"}], "time_limit_s": 2}


def _write(tmp_path, lines):
  path = tmp_path / "bench.jsonl"
  path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
  return str(path)


def test_valid_lines_of_each_family(tmp_path):
  (math,) = load_problems(_write(tmp_path, [MATH, ""]), "math")
  assert (math.id, math.answer) == ("1", "12")
  assert math.question.startswith("Find x.") and "\\boxed{}" in math.question
  (choice,) = load_problems(_write(tmp_path, [CHOICE]), "multiple_choice")
  assert choice.answer == "C" and choice.num_choices == 3
  assert "A) a\nB) b\nC) c" in choice.question
  (code,) = load_problems(_write(tmp_path, [CODE]), "code")
  assert [t["input"] for t in code.tests] == ["2\n", "1\n"]  # public tests are graded too
  assert code.time_limit_s == 2.0 and code.memory_mb == 512 and code.fn_name is None and code.answer is None
  assert "stdin" in code.question
  (call,) = load_problems(_write(tmp_path, [CODE | {"fn_name": "f", "starter_code": "def f(x):"}]), "code")
  assert call.fn_name == "f" and "def f(x):" in call.question


@pytest.mark.parametrize("kind, line, message", [
    ("math", {"problem": "p", "answer": "1"}, "missing field 'id'"),
    ("math", {"id": 1, "problem": "p"}, "missing field 'answer'"),
    ("math", {"id": 1, "problem": 3, "answer": "1"}, "field 'problem' must be str, got int"),
    ("math", {"id": True, "problem": "p", "answer": "1"}, "field 'id' must be str or int, got bool"),
    ("math", {"id": 1, "problem": "p", "answer": " "}, "field 'answer' is empty"),
    ("math", "[1, 2]", "expected a JSON object, got list"),
    ("math", "{not json", "invalid JSON"),
    ("multiple_choice", CHOICE | {"answer": "D"}, "one of the letters ABC"),
    ("multiple_choice", CHOICE | {"choices": ["only"]}, "2..26 non-empty strings"),
    ("code", CODE | {"tests": []}, "'tests' must hold at least one test"),
    ("code", CODE | {"public_tests": [{"input": "1"}]}, r"public_tests\[0\] must be"),
    ("code", CODE | {"time_limit_s": -1}, "must be positive"),
    ("code", CODE | {"fn_name": 3}, "field 'fn_name' must be str"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, kind, line, message):
  path = _write(tmp_path, [MATH if kind == "math" else CHOICE if kind == "multiple_choice" else CODE, line])
  with pytest.raises(BenchmarkError, match=message) as error:
    load_problems(path, kind)
  assert f"{path}:2:" in str(error.value)


def test_duplicate_ids_and_empty_files(tmp_path):
  with pytest.raises(BenchmarkError, match="id '1' already used on line 1"):
    load_problems(_write(tmp_path, [MATH, MATH]), "math")
  with pytest.raises(BenchmarkError, match="no problems"):
    load_problems(_write(tmp_path, [""]), "math")


def test_toy_problems_are_held_out_corpus_problems():
  problems = toy_problems(families=("arithmetic", "word"), difficulties=(1, 3), count=2, seed=5)
  assert len(problems) == 8 and len({p.id for p in problems}) == 8
  for p in problems:
    family, difficulty, split, seed, index = p.id.split("/")
    record = make_record(family, int(difficulty), int(seed), int(index), split="heldout")
    assert split == "heldout" and p.tags == {"family": family, "difficulty": int(difficulty)}
    assert p.question == record["problem"] and check_answer(record, f"\\boxed{{{p.answer}}}")
  assert toy_problems(count=1) == toy_problems(count=1)


def test_published_numbers_name_known_benchmarks_and_presets():
  for p in PUBLISHED:
    assert p.benchmark in BENCHMARKS and p.preset in PRESETS, p
  assert [p.score for p in published("aime25", "rsa_40k")] == [91.9]
  assert [p.score for p in published("hmmt_feb25", "rsa_40k")] == [89.6]
  assert [(p.score, p.tokens) for p in published("apex_shortlist", "apex_extra_high")] == [(51.8, 5.5e6)]
  assert published("toy", "toy_rsa") == []


def test_presets_follow_the_report():
  rsa = get_preset("rsa_16k").rsa_config()
  assert (rsa.rounds, rsa.population, rsa.candidates, rsa.budget, rsa.tail, rsa.final_budget) == (
      2, 16, 4, 16384, 4096, 40960)
  assert rsa.sampling == Sampling(temperature=1.0, top_p=1.0)
  extra = get_preset("apex_extra_high").rsa_config()
  assert (extra.rounds, extra.population, extra.budget) == (8, 32, 32768)
  single = get_preset("single_avg64").rsa_config()
  assert (single.rounds, single.population, single.candidates) == (0, 64, 1)
  assert get_preset("single_avg16_code").sampling == Sampling(temperature=0.6, top_p=0.95, top_k=20)
  with pytest.raises(PresetError, match="no rounds"):
    Preset("bad", "single", 4, 8, Sampling(), "", rounds=2)
  with pytest.raises(PresetError, match="unknown preset"):
    get_preset("rsa_1m")
