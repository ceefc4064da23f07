"""benchmarks/heldout_split.py on a hand-made finished stage."""

import importlib.util
import json
import os
import sys

import pytest

from zaya_jax.posttrain import heldout

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "heldout_split.py")
_spec = importlib.util.spec_from_file_location("heldout_split", _PATH)
hs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hs)


def test_prints_the_change_on_the_frequent_answers_and_on_the_rest(tmp_path, monkeypatch, capsys):
  cfg = {"families": ["arithmetic"], "difficulties": [1], "count": 4, "seed": 0}
  guessed = heldout.heldout_records(**cfg)[0]["answer"]
  (tmp_path / "config.json").write_text(json.dumps({"heldout": cfg}))
  (tmp_path / "heldout_init.json").write_text(json.dumps({"per_problem": "0001", "top_answers": []}))
  (tmp_path / "summary.json").write_text(json.dumps({"heldout": {"per_problem": "1001",
                                                                 "top_answers": [[guessed, 3]]}}))
  monkeypatch.setattr(sys, "argv", ["heldout_split.py", f"--stage={tmp_path}", "--top=1"])
  hs.main()
  out = capsys.readouterr().out
  assert f"[{guessed!r}]" in out and "| answer among them |" in out and "| 0 -> 1 |" in out
  os.remove(tmp_path / "summary.json")
  with pytest.raises(SystemExit, match="not a finished stage"):
    hs.main()
