"""zaya_jax/loading.py: HF directories and training workdirs through one `load_model`, and the RSA sampling CLI
reading a workdir."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from zaya_jax import CheckpointError, ZayaConfig, init_params, save_hf_checkpoint
from zaya_jax.data import ByteTokenizer
from zaya_jax.loading import checkpoint_steps, load_model
from zaya_jax.sampling import ByteChatTemplate
from zaya_jax.train.trainer import write_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = dict(vocab_size=ByteTokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=16, moe_intermediate_size=16, num_experts=2, router_hidden_size=8,
             bos_token_id=1, eos_token_id=2, pad_token_id=0, dtype="float32", moe_impl="reference")


def _params(seed):
  return init_params(ZayaConfig(**MODEL), jax.random.key(seed))


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _write_workdir(workdir, steps_params):
  """A workdir as the trainers write it: the run config and orbax states holding "params" among other entries."""
  write_config(ml_collections.ConfigDict({"model": MODEL, "train": {"steps": 10}}), str(workdir))
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state",))
  for step, params in steps_params:
    state = {"params": params, "step": np.int32(step), "opt_state": {"mu": jax.tree.map(np.zeros_like, params)}}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  manager.wait_until_finished()
  manager.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("workdir")
  _write_workdir(path, [(3, _params(0)), (6, _params(1))])
  return str(path)


def test_hf_directory(tmp_path):
  config, params = ZayaConfig(**MODEL), _params(2)
  save_hf_checkpoint(str(tmp_path), config, params)
  loaded = load_model(str(tmp_path))
  assert loaded.step is None and loaded.config.num_hidden_layers == 2
  assert isinstance(loaded.tokenizer, ByteTokenizer) and isinstance(loaded.chat_template, ByteChatTemplate)
  _assert_same(loaded.params, params)


def test_workdir_newest_or_chosen_step(workdir):
  assert checkpoint_steps(workdir) == [3, 6]
  newest = load_model(workdir)
  assert newest.step == 6 and isinstance(newest.tokenizer, ByteTokenizer)
  _assert_same(newest.params, _params(1))
  _assert_same(load_model(workdir, step=3).params, _params(0))
  bf16 = load_model(workdir, dtype="bfloat16")
  expected = jax.eval_shape(lambda: init_params(bf16.config, jax.random.key(0)))  # balancing biases stay fp32
  assert bf16.config.dtype == "bfloat16" and "bfloat16" in {a.dtype.name for a in jax.tree.leaves(expected)}
  assert jax.tree.map(lambda a: a.dtype, bf16.params) == jax.tree.map(lambda a: a.dtype, expected)


def test_errors_name_the_problem(workdir, tmp_path):
  with pytest.raises(CheckpointError, match="no config.json"):
    load_model(str(tmp_path))
  with pytest.raises(CheckpointError, match="no checkpoint of step 5.*\\[3, 6\\]"):
    load_model(workdir, step=5)
  empty = tmp_path / "empty"
  write_config(ml_collections.ConfigDict({"model": MODEL}), str(empty))
  with pytest.raises(CheckpointError, match="has no checkpoint under"):
    load_model(str(empty))
  wider = tmp_path / "wider"  # the checkpoint holds a narrower model than its config says
  _write_workdir(wider, [(1, _params(0))])
  with open(wider / "config.json") as f:
    raw = json.load(f)
  raw["model"]["hidden_size"] = 64
  with open(wider / "config.json", "w") as f:
    json.dump(raw, f)
  with pytest.raises(CheckpointError, match="cannot read the params"):
    load_model(str(wider))


def test_rsa_sample_cli_reads_a_workdir(workdir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text(json.dumps({"id": "p1", "question": "1+2=?", "answer": "3"}) + "\n")
  output = tmp_path / "out.jsonl"
  cmd = [sys.executable, "experiments/rsa_sample.py", f"--checkpoint={workdir}", f"--prompts={prompts}",
         f"--output={output}", "--population=2", "--candidates=2", "--rounds=1", "--budget=4", "--tail=2"]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (result,) = [json.loads(line) for line in output.read_text().splitlines()]
  assert result["id"] == "p1" and [r["round"] for r in result["rounds"]] == [0, 1]
  assert all(0 < c["tokens"] <= 4 for r in result["rounds"] for c in r["candidates"])
  assert "round 1/1" in proc.stdout


def test_rsa_sample_cli_names_a_bad_prompt_line(tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text(json.dumps({"question": "1+2=?"}) + "\n\n" + json.dumps({"id": "p2", "text": "x"}) + "\n")
  cmd = [sys.executable, "experiments/rsa_sample.py", "--checkpoint=/nonexistent", f"--prompts={prompts}",
         f"--output={tmp_path / 'out.jsonl'}"]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  # Checked before the (here missing) checkpoint is read; the blank line counts.
  assert proc.returncode != 0 and f"{prompts}:3: needs a 'question' or 'problem' string" in proc.stderr
