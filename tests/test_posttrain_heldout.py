"""zaya_jax/posttrain/heldout.py: the held-out problems and the summary of scored replies (hand-made rows)."""

import pytest

from zaya_jax.posttrain import heldout


def _row(family, difficulty, answer, correct, tokens=10, stopped=True):
  record = {"family": family, "difficulty": difficulty, "problem": f"{family} {difficulty}?", "answer": "7"}
  return {"record": record, "text": f"\\boxed{{{answer}}}", "tokens": tokens, "stopped": stopped,
          "answer": answer, "correct": correct}


def test_records_cycle_families_then_difficulties_and_stay_held_out():
  records = heldout.heldout_records(["arithmetic", "linear"], [1, 2], 6, seed=0)
  assert [(r["family"], r["difficulty"]) for r in records] == [
      ("arithmetic", 1), ("linear", 1), ("arithmetic", 2), ("linear", 2), ("arithmetic", 1), ("linear", 1)]
  assert len({r["problem"] for r in records}) == 6


def test_summary_counts_rates_and_the_most_frequent_answers():
  rows = [_row("arithmetic", 1, "0", False, tokens=4), _row("arithmetic", 2, "0", True, tokens=6),
          _row("linear", 1, "0", False, stopped=False), _row("linear", 2, "5", True),
          _row("linear", 2, None, False)]
  result = heldout.summarize(rows, ["arithmetic", "linear", "word"], [1, 2])
  assert (result["accuracy"], result["correct"], result["count"]) == (0.4, 2, 5)
  assert result["by_family"] == {"arithmetic": 0.5, "linear": pytest.approx(1 / 3), "word": 0.0}
  assert result["by_difficulty"] == {"1": 0.0, "2": pytest.approx(2 / 3)}
  assert result["mean_response_tokens"] == 8.0
  assert (result["stopped_fraction"], result["answered_fraction"]) == (0.8, 0.8)
  assert result["top_answers"] == [["0", 3], ["5", 1]]  # unanswered replies are not an answer
  assert [s["correct"] for s in result["samples"]] == [False, True, False]
  assert result["per_problem"] == "01010"
  low, high = result["interval_95"]
  assert 0.0 <= low < 0.4 < high <= 0.8  # a bootstrap mean of 5 problems, 2 correct, is a multiple of 0.2
  line = heldout.format_heldout(result)
  assert f"held-out accuracy 40.0% (95% CI {low:.1%}-{high:.1%}; 2/5; arithmetic 50%, linear 33%, word 0%)" in line
  assert line.endswith("most frequent answer '0' in 3/5")


def test_compare_pairs_the_same_problems():
  init = {"per_problem": "0011" * 25}
  final = {"per_problem": "0111" * 25}  # one problem in four gained, none lost
  change = heldout.compare(init, final)
  assert change["change"] == pytest.approx(0.25)
  low, high = change["interval_95"]
  assert 0.1 < low < 0.25 < high < 0.4
  assert heldout.compare(final, final) == {"change": 0.0, "interval_95": [0.0, 0.0]}  # paired: no noise at all
  assert heldout.format_change(change).startswith("+25.0 points (95% CI +")
  for missing in (None, {}, {"per_problem": "0111"}):  # no init score, an old summary, other problems
    assert heldout.compare(missing, final) is None


def test_sampled_summary_is_avg_at_k_with_pass_at_k_and_counts_per_problem():
  correct = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
  result = heldout.summarize_sampled(correct, temperature=0.5)
  assert (result["k"], result["temperature"]) == (4, 0.5)
  assert result["accuracy"] == pytest.approx(5 / 12) and result["pass_at_k"] == pytest.approx(2 / 3)
  assert result["per_problem"] == [1, 4, 0]
  low, high = result["interval_95"]
  assert 0.0 <= low < 5 / 12 < high <= 1.0


def test_compare_pairs_avg_at_k_when_both_sampled_alike():
  greedy = {"per_problem": "01" * 50}
  init = dict(greedy, sampled={"k": 4, "temperature": 0.5, "per_problem": [1, 2] * 50})
  final = dict(greedy, sampled={"k": 4, "temperature": 0.5, "per_problem": [2, 2] * 50})  # +1/4 on half
  change = heldout.compare(init, final)
  assert change["change"] == 0.0 and change["sampled"]["k"] == 4
  assert change["sampled"]["change"] == pytest.approx(0.125)
  assert heldout.format_change(change).startswith("+0.0 points (95% CI +0.0 to +0.0); avg@4 +12.5 points")
  other = dict(greedy, sampled=dict(final["sampled"], temperature=1.0))  # another measurement: not paired
  assert "sampled" not in heldout.compare(init, other)
  assert "sampled" not in heldout.compare(greedy, final)
  line = heldout.format_heldout(dict(heldout.summarize([_row("linear", 1, "7", True)], ["linear"], [1]),
                                     sampled=heldout.summarize_sampled([[1, 0]], 0.5)))
  assert line.endswith("avg@2 (T=0.5) 50.0% (95% CI 50.0%-50.0%), pass@2 100.0%")


def test_frequent_answer_split_separates_gains_on_the_guessed_answers():
  references = ["0", "0", "5", "7", "9"]
  init = {"per_problem": "00110", "top_answers": [["5", 2]], "sampled": {"k": 4, "per_problem": [0, 1, 2, 4, 0]}}
  final = {"per_problem": "11110", "top_answers": [["0", 3], ["5", 1]],
           "sampled": {"k": 4, "per_problem": [4, 4, 2, 3, 0]}}
  split = heldout.frequent_answer_split(init, final, references, top=2)
  assert split["answers"] == ["0", "5"]
  assert split["frequent"] == {"problems": 3, "greedy": [1, 3], "sampled": [0.75, 2.5]}
  assert split["rest"] == {"problems": 2, "greedy": [1, 1], "sampled": [1.0, 0.75]}
  assert "sampled" not in heldout.frequent_answer_split({"per_problem": "00110"}, final, references)["rest"]
