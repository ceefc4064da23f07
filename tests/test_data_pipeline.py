"""The packed grain pipeline: batch layout on a hand-checked example, no lost tokens, mixture weights,
checkpoint/resume, process sharding, phases and config validation."""

import collections
import json

import numpy as np
import pytest

from zaya_jax import data
from zaya_jax.data import ByteTokenizer, DataConfigError

TOK = ByteTokenizer()


def _jsonl(path, texts):
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  return {"kind": "jsonl", "paths": str(path)}


def _config(sources, mixture, seq_len=64, **kw):
  return {"tokenizer": "byte", "sources": sources, "eval_sources": sources,
          "phases": [{"name": "only", "steps": 100, "seq_len": seq_len, "mixture": mixture}], **kw}


def _segments(batch):
  """Every (row, segment) as its token list, in row-major order."""
  out = []
  for tokens, seg in zip(batch["tokens"], batch["segment_ids"]):
    for s in range(1, seg.max() + 1):
      out.append(tokens[seg == s].tolist())
  return out


def _check_layout(batch, seq_len):
  """Invariants of every batch: contiguous segments, positions, loss_mask, padding."""
  assert set(batch) == set(data.BATCH_KEYS)
  for key in data.BATCH_KEYS:
    assert batch[key].dtype == np.int32 and batch[key].shape[1] == seq_len
  seg, pos = batch["segment_ids"], batch["positions"]
  for row_seg, row_pos in zip(seg, pos):
    used = row_seg[row_seg > 0]
    assert (np.diff(used) >= 0).all() and (row_seg[len(used):] == 0).all()  # padding only at the end
    for s in range(1, row_seg.max() + 1):
      assert (row_pos[row_seg == s] == np.arange((row_seg == s).sum())).all()
  np.testing.assert_array_equal(batch["loss_mask"], data.loss_mask_from_segments(seg))
  assert (batch["tokens"][seg == 0] == TOK.pad_id).all()


def test_hand_checked_packing(tmp_path):
  # "a" -> [bos, 113, eos] (3 tokens), "bcd" -> 5 tokens, "efghijklm" -> 11 tokens = chunks of 8 and 3.
  src = _jsonl(tmp_path / "d.jsonl", ["a", "bcd", "efghijklm"])
  cfg = _config({"d": src}, {"d": 1.0}, seq_len=8, num_packing_bins=2, shuffle=False)
  batch = next(data.make_train_iterator(cfg, TOK, seq_len=8, batch_size=3, seed=0))
  np.testing.assert_array_equal(batch["tokens"], [[1, 113, 2, 1, 114, 115, 116, 2],
                                                  [1, 117, 118, 119, 120, 121, 122, 123],
                                                  [124, 125, 2, 1, 113, 2, 0, 0]])  # 2nd epoch starts
  np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 2, 2, 2, 2, 2],
                                                       [1, 1, 1, 1, 1, 1, 1, 1],
                                                       [1, 1, 1, 2, 2, 2, 0, 0]])
  np.testing.assert_array_equal(batch["positions"], [[0, 1, 2, 0, 1, 2, 3, 4],
                                                     [0, 1, 2, 3, 4, 5, 6, 7],
                                                     [0, 1, 2, 0, 1, 2, 0, 0]])
  # 0 where the next token is another document's BOS, padding, or past the row end.
  np.testing.assert_array_equal(batch["loss_mask"], [[1, 1, 0, 1, 1, 1, 1, 0],
                                                     [1, 1, 1, 1, 1, 1, 1, 0],
                                                     [1, 1, 0, 1, 1, 0, 0, 0]])


def test_eval_batches_hold_every_token_once(tmp_path):
  rng = np.random.default_rng(0)
  texts = ["".join(chr(97 + c) for c in rng.integers(26, size=n)) + f"#{i}"
           for i, n in enumerate(rng.integers(1, 90, size=60))]  # some longer than seq_len: split
  cfg = _config({"d": _jsonl(tmp_path / "d.jsonl", texts)}, {"d": 1.0}, num_packing_bins=4)
  batches = data.make_eval_batches(cfg, TOK, seq_len=32, batch_size=4, num_batches=40)["d"]
  assert len(batches) == 40 and not batches[-1]["segment_ids"].any()  # padded out to num_batches
  for b in batches:
    _check_layout(b, 32)
  # Each document is [bos, bytes, eos] cut into 32-token chunks; packing may reorder chunks, never alter them.
  chunks = sorted(s for b in batches for s in _segments(b))
  expected = []
  for text in texts:
    ids = [TOK.bos_id, *TOK.encode(text), TOK.eos_id]
    expected += [ids[i:i + 32] for i in range(0, len(ids), 32)]
  assert chunks == sorted(expected)


def test_training_batches_are_well_formed_and_deterministic(tmp_path):
  cfg = data.default_pretrain_config()
  a = data.make_train_iterator(cfg, TOK, seq_len=128, batch_size=4, seed=1, phase="math_heavy")
  b = data.make_train_iterator(cfg, TOK, seq_len=128, batch_size=4, seed=1, phase=1)
  c = data.make_train_iterator(cfg, TOK, seq_len=128, batch_size=4, seed=2, phase=1)
  for _ in range(3):
    x, y, z = next(a), next(b), next(c)
    _check_layout(x, 128)
    for key in data.BATCH_KEYS:
      np.testing.assert_array_equal(x[key], y[key])
  assert not np.array_equal(x["tokens"], z["tokens"])
  assert (x["segment_ids"] > 0).mean() > 0.8  # packing leaves little padding


def test_mixture_proportions(tmp_path):
  sources = {"a": _jsonl(tmp_path / "a.jsonl", [f"A{i:04d}" for i in range(500)]),
             "b": _jsonl(tmp_path / "b.jsonl", [f"B{i:04d}" for i in range(500)]),
             "c": _jsonl(tmp_path / "c.jsonl", ["never"])}
  cfg = _config(sources, {"a": 3.0, "b": 1.0, "c": 0.0})
  it = data.make_train_iterator(cfg, TOK, seq_len=64, batch_size=8, seed=0)
  first = collections.Counter(TOK.decode(s)[0] for _ in range(30) for s in _segments(next(it)))
  assert set(first) == {"A", "B"}
  assert abs(first["A"] / (first["A"] + first["B"]) - 0.75) < 0.03, first


def test_checkpoint_resume_gives_identical_batches(tmp_path):
  cfg = data.default_pretrain_config()
  cfg.num_packing_bins = 4
  it = data.make_train_iterator(cfg, TOK, seq_len=128, batch_size=2, seed=0)
  for _ in range(5):
    next(it)
  state = it.get_state()
  json.dumps(state)  # plain data: goes into any checkpoint
  expected = [next(it) for _ in range(4)]
  resumed = data.make_train_iterator(cfg, TOK, seq_len=128, batch_size=2, seed=0)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in data.BATCH_KEYS:
      np.testing.assert_array_equal(got[key], want[key])


def test_orbax_checkpoint_round_trip(tmp_path):
  grain = pytest.importorskip("grain")
  ocp = pytest.importorskip("orbax.checkpoint")
  cfg = data.default_pretrain_config()
  it = data.make_train_iterator(cfg, TOK, seq_len=64, batch_size=2, seed=0)
  next(it)
  with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as manager:
    manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    want = next(it)
    resumed = data.make_train_iterator(cfg, TOK, seq_len=64, batch_size=2, seed=0)
    manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  np.testing.assert_array_equal(next(resumed)["tokens"], want["tokens"])


def test_process_sharding_is_disjoint_and_complete(tmp_path):
  texts = [f"doc{i:03d}" for i in range(50)]
  cfg = _config({"d": _jsonl(tmp_path / "d.jsonl", texts)}, {"d": 1.0})
  seen = []
  for p in range(2):
    it = data.make_train_iterator(cfg, TOK, seq_len=64, batch_size=2, seed=0, process_index=p, process_count=2)
    seen.append({TOK.decode(s) for _ in range(10) for s in _segments(next(it))})
  assert seen[0] and seen[1] and not seen[0] & seen[1]
  evals = [data.make_eval_batches(cfg, TOK, 64, 2, 10, process_index=p, process_count=2)["d"] for p in range(2)]
  shards = [{TOK.decode(s) for b in batches for s in _segments(b)} for batches in evals]
  assert not shards[0] & shards[1] and shards[0] | shards[1] == set(texts)
  with pytest.raises(ValueError, match="process_index 2"):
    data.make_train_iterator(cfg, TOK, 64, 2, 0, process_index=2, process_count=2)


def test_phases_and_long_context_phase():
  cfg = data.default_pretrain_config(steps=(10, 5, 3), seq_lens=(64, 64, 256))
  assert [data.phase_for_step(cfg, s).name for s in (0, 9, 10, 14, 15, 17)] == [
      "general", "general", "math_heavy", "math_heavy", "long_reasoning", "long_reasoning"]
  phase = data.phase_for_step(cfg, 16)
  assert (phase.index, phase.start_step, phase.steps, phase.seq_len) == (2, 15, 3, 256)
  assert phase.mixture["long_reasoning"] > 0.8
  with pytest.raises(DataConfigError, match="outside the data schedule"):
    data.phase_for_step(cfg, 18)
  with pytest.raises(DataConfigError, match="no phase 'sft'"):
    data.get_phase(cfg, "sft")
  batch = next(data.make_train_iterator(cfg, TOK, phase.seq_len, 2, seed=0, phase=phase.name))
  _check_layout(batch, 256)
  evals = data.make_eval_batches(cfg, TOK, 64, 2, 1)
  assert set(evals) == {"general", "math"}


def test_config_errors(tmp_path):
  good = data.default_pretrain_config().to_dict()
  bad_cases = [
      ({"sources": None}, "sources must map"),
      ({"shuffle_buffer": 3}, "unknown keys"),
      ({"phases": []}, "non-empty list"),
      ({"phases": [{"name": "x", "steps": 0, "seq_len": 8, "mixture": {"math": 1}}]}, "steps must be a positive"),
      ({"phases": [{"name": "x", "steps": 1, "seq_len": 8, "mixture": {"web": 1}}]}, r"unknown sources \['web'\]"),
      ({"phases": [{"name": "x", "steps": 1, "seq_len": 8, "mixture": {"math": 0}}]}, "positive sum"),
      ({"phases": [{"name": "x", "steps": 1, "seq_len": 8}]}, "exactly the keys"),
      ({"num_packing_bins": 0}, "num_packing_bins"),
  ]
  for change, message in bad_cases:
    with pytest.raises(DataConfigError, match=message):
      data.make_train_iterator({**good, **change}, TOK, 64, 2, seed=0)
  missing = dict(good)
  del missing["phases"]
  with pytest.raises(DataConfigError, match="missing"):
    data.phases(missing)
  with pytest.raises(ValueError, match="seq_len"):
    data.make_train_iterator(good, TOK, 1, 2, seed=0)
  with pytest.raises(DataConfigError, match="no eval_sources"):
    data.make_eval_batches({**good, "eval_sources": {}}, TOK, 64, 2, 1)
  with pytest.raises(ValueError, match="none left for process"):
    tiny = _config({"d": _jsonl(tmp_path / "one.jsonl", ["x"])}, {"d": 1.0})
    data.make_train_iterator(tiny, TOK, 64, 2, seed=0, process_index=1, process_count=2)
