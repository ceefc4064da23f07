"""The built-in corpus: every family solves itself, determinism, disjoint splits, answer checking."""

import numpy as np
import pytest

from zaya_jax.data import corpus

ALL = [(f, d) for f in corpus.FAMILIES for d in corpus.DIFFICULTIES]


@pytest.mark.parametrize("family,difficulty", ALL)
def test_records_are_well_formed_and_self_consistent(family, difficulty):
  for index in range(40):
    record = corpus.make_record(family, difficulty, seed=3, index=index)
    assert set(record) == {"id", "family", "difficulty", "problem", "solution", "answer"}
    assert record["id"] == f"{family}/{difficulty}/train/3/{index}"
    assert (record["family"], record["difficulty"]) == (family, difficulty)
    assert record["problem"] and record["answer"]
    assert record["solution"].endswith(f"\\boxed{{{record['answer']}}}.")
    assert corpus.check_answer(record, record["solution"])
    assert corpus.split_of(record["problem"]) == "train"


def test_answers_are_correct_where_cheaply_recomputable():
  for index in range(30):
    r = corpus.make_record("arithmetic", 4, 0, index)
    assert eval(r["problem"][len("Compute "):-1]) == int(r["answer"])  # expression text is Python syntax
    r = corpus.make_record("modular", 5, 0, index)
    base, rest = r["problem"][len("What is "):-1].split("^")
    k, m = rest.split(" mod ")
    assert pow(int(base), int(k), int(m)) == int(r["answer"])


def test_modular_products_and_powers_are_never_zero():
  for difficulty in (2, 3, 4):  # products and powers mod a prime, factors not multiples of it: never 0
    records = [corpus.make_record("modular", difficulty, 0, i) for i in range(200)]
    assert all(r["answer"] != "0" for r in records), difficulty
    assert all(int(r["problem"].rsplit(" mod ", 1)[1][:-1]) in (5, 7, 11, 13, 17, 19, 23, 29, 31) for r in records
               if difficulty <= 3)


def test_determinism():
  a = corpus.make_record("linear", 3, seed=7, index=11)
  assert a == corpus.make_record("linear", 3, seed=7, index=11)
  assert a != corpus.make_record("linear", 3, seed=7, index=12)
  assert a != corpus.make_record("linear", 3, seed=8, index=11)
  first = corpus.generate_problem("word", 2, np.random.default_rng(5))
  assert first == corpus.generate_problem("word", 2, np.random.default_rng(5))


def test_difficulty_grows_solutions():
  lengths = [np.mean([len(corpus.make_record("arithmetic", d, 0, i)["solution"].splitlines()) for i in range(20)])
             for d in corpus.DIFFICULTIES]
  assert lengths == sorted(lengths) and lengths[-1] > lengths[0]


def test_heldout_problems_never_appear_in_train():
  train, heldout = set(), set()
  for family, difficulty in ALL:
    train |= {corpus.make_record(family, difficulty, 0, i, "train")["problem"] for i in range(60)}
    heldout |= {corpus.make_record(family, difficulty, 0, i, "heldout")["problem"] for i in range(15)}
  assert len(heldout) > 200  # mostly distinct problems, not one repeated one
  assert not train & heldout
  # Disjoint by construction: a text's split is a function of the text, whatever seed produced it.
  assert all(corpus.split_of(p) == "heldout" for p in heldout)
  other_seed = {corpus.make_record(f, d, 99, i, "train")["problem"] for f, d in ALL for i in range(20)}
  assert not other_seed & heldout


def test_extract_boxed_and_check_answer():
  record = {"answer": "4"}
  assert corpus.extract_boxed(r"so \boxed{3} then \boxed{\frac{8}{2}} done") == r"\frac{8}{2}"
  assert corpus.extract_boxed("no box") is None
  assert corpus.extract_boxed(r"\boxed{5} and a cut-off \boxed{12") == "5"
  for good in (r"\boxed{4}", r"\boxed{ 4 }", r"\boxed{4.0}", r"\boxed{$4$}", r"\boxed{8/2}", r"x \boxed{3} \boxed{4}."):
    assert corpus.check_answer(record, good), good
  for bad in (r"\boxed{5}", r"\boxed{4} then \boxed{5}", "4", r"\boxed{}", r"\boxed{4x}"):
    assert not corpus.check_answer(record, bad), bad
  assert corpus.check_answer({"answer": "(3, -2)"}, r"\boxed{(3,-2)}")
  assert corpus.check_answer({"answer": "Emma"}, r"\boxed{\text{emma}}")
  with pytest.raises(corpus.CorpusError, match="no 'answer'"):
    corpus.check_answer({"id": "x"}, r"\boxed{1}")


def test_bad_arguments():
  with pytest.raises(corpus.CorpusError, match="unknown problem family"):
    corpus.generate_problem("poetry", 1, np.random.default_rng(0))
  with pytest.raises(corpus.CorpusError, match="difficulty"):
    corpus.make_record("linear", 9, 0, 0)
  with pytest.raises(corpus.CorpusError, match="split"):
    corpus.make_record("linear", 1, 0, 0, split="test")
  with pytest.raises(corpus.CorpusError, match="heldout_fraction"):
    corpus.make_record("linear", 1, 0, 0, heldout_fraction=0.0)
  with pytest.raises(corpus.CorpusError, match="non-negative"):
    corpus.make_record("linear", 1, -1, 0)
