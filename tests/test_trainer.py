"""The training loop (zaya_jax/train/trainer.py) and experiments/pretrain.py: loss masking, bit-identical resume,
SIGTERM, corrupt-checkpoint fallback, outputs, config overrides.

Every run here uses one configuration (written to a config file, so the subprocess and this process train the
same model on the same data); shorter runs stop with `stop_at`, so the schedule is the same everywhere and the
jitted step compiles once per process. The SIGTERM subprocess starts first and compiles while this process does.
"""

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from zaya_jax.train import reporting, trainer
from zaya_jax.train.feeds import DataFeed
from zaya_jax.train.steps import next_token_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = '''
import ml_collections
import configs.tiny


def get_config():
  config = configs.tiny.get_config()
  config.model = ml_collections.ConfigDict(dict(
      vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
      head_dim=16, moe_intermediate_size=32, num_experts=4, router_hidden_size=8, eos_token_id=1))
  if "data" in config:
    del config["data"]  # the synthetic data
  config.train.update(steps=1000, batch_size=4, seq_len=32, log_every=1, eval_every=0, checkpoint_every=3,
                      keep_checkpoints=20)
  config.balancing.rate = 1e-2  # biases move visibly, so a resume that lost them would show
  return config
'''
REFERENCE_STEPS = 30


def _losses(workdir):
  return {r["step"]: r["loss"] for r in reporting.read_metrics(workdir) if "loss" in r}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
  path = tmp_path_factory.mktemp("config") / "train_test_config.py"
  path.write_text(CONFIG_FILE)
  return str(path)


@pytest.fixture(scope="module")
def config(config_path):
  spec = importlib.util.spec_from_file_location("train_test_config", config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.fixture(scope="module")
def sigterm_run(config_path, tmp_path_factory):
  """experiments/pretrain.py in a subprocess, with command-line overrides of the config file's checkpoint cadence
  and retention, sent SIGTERM by a watcher thread once it has logged two steps -> (process, workdir, output).

  Started before the in-process runs so that both compile at once."""
  workdir = str(tmp_path_factory.mktemp("sigterm"))
  cmd = [sys.executable, "experiments/pretrain.py", f"--config={config_path}", f"--workdir={workdir}",
         "--config.train.checkpoint_every=1000", "--config.train.keep_checkpoints=2"]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = os.path.join(workdir, reporting.METRICS_FILE)

  def terminate_after_two_steps():
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
      if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 2:
        proc.send_signal(signal.SIGTERM)
        return
      time.sleep(0.005)

  watcher = threading.Thread(target=terminate_after_two_steps, daemon=True)
  watcher.start()
  yield proc, workdir
  if proc.poll() is None:
    proc.kill()


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory, sigterm_run):
  """An uninterrupted run of REFERENCE_STEPS steps -> (workdir, {step: loss})."""
  del sigterm_run  # only started first
  workdir = str(tmp_path_factory.mktemp("reference"))
  uninterrupted = config.copy_and_resolve_references()
  uninterrupted.train.checkpoint_every = 1000  # saves do not change the losses; skipping them saves time
  trainer.train(uninterrupted, workdir, stop_at=REFERENCE_STEPS)
  return workdir, _losses(workdir)


def test_next_token_loss_hand_computed():
  logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]]))
  tokens = np.array([[0, 1, 2, 0]])
  loss_mask = np.array([[1, 0, 1, 1]])  # t=1 -> t=2 crosses a document boundary; t=3 has no target anyway
  loss, n = next_token_loss(logits, tokens, loss_mask)
  # targets: t=0 predicts 1 (p=0.25), t=2 predicts 0 (p=0.2)
  np.testing.assert_allclose(loss, -(np.log(0.25) + np.log(0.2)) / 2, rtol=1e-6)
  assert int(n) == 2
  loss, n = next_token_loss(logits, tokens, np.zeros_like(loss_mask))
  assert float(loss) == 0.0 and int(n) == 0


def test_reference_run_outputs(reference):
  workdir, losses = reference
  assert sorted(losses) == list(range(1, REFERENCE_STEPS + 1))
  assert losses[REFERENCE_STEPS] < losses[1] - 0.5  # it learns the synthetic sequences
  record = reporting.read_metrics(workdir)[-1]
  assert len(record["load_max_min"]) == 2 and len(record["load"][0]) == 5
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
  assert os.path.exists(reporting.plot_metrics(workdir))


def test_resume_is_bit_identical(config, reference, tmp_path):
  """Stop at step 7 (checkpoints at 3, 6 and 7), then lose checkpoint 7 as a process killed before writing it would:
  the restart resumes from 6, drops the logged step 7 and recomputes it; all losses equal the uninterrupted run's."""
  workdir = str(tmp_path)
  trainer.train(config, workdir, stop_at=7)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "7"))
  state = trainer.train(config, workdir, stop_at=12)
  assert int(state.step) == 12
  steps = [r["step"] for r in reporting.read_metrics(workdir)]
  assert steps == list(range(1, 13))
  losses = _losses(workdir)
  assert all(losses[s] == reference[1][s] for s in losses), (losses, reference[1])


def test_corrupt_latest_checkpoint_falls_back(config, reference, tmp_path, caplog):
  workdir = str(tmp_path)
  trainer.train(config, workdir, stop_at=6)  # checkpoints 3, 6
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "6", "state")):
    for name in files:  # truncate every file of the newest checkpoint
      path = os.path.join(root, name)
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  with caplog.at_level(logging.WARNING):
    state = trainer.train(config, workdir, stop_at=8)
  assert "checkpoint step 6" in caplog.text and "unreadable" in caplog.text
  assert os.path.isdir(os.path.join(workdir, "checkpoints.corrupt", "6"))
  assert int(state.step) == 8
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, 9)) and all(losses[s] == reference[1][s] for s in losses)


def test_sigterm_saves_and_resume_matches(config, reference, sigterm_run, tmp_path):
  """SIGTERM to experiments/pretrain.py (config overrides on its command line): it saves the current step and
  exits 0; a restart from that checkpoint (in this process) continues with the uninterrupted run's losses."""
  proc, workdir = sigterm_run
  output, _ = proc.communicate(timeout=240)
  assert proc.returncode == 0 and "stopped at step" in output, output[-3000:]
  logged = _losses(workdir)
  last = max(logged)
  assert sorted(logged) == list(range(1, last + 1))
  assert last + 3 < config.train.steps, "the signal never arrived"
  # Only the SIGTERM checkpoint: the command line's checkpoint_every=1000 replaced the file's 3.
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(last)]
  expected = reference[1]
  if last + 3 > REFERENCE_STEPS:  # the signal arrived late (a busy machine): extend a copy of the reference run
    extended = str(tmp_path / "reference")
    shutil.copytree(reference[0], extended)
    uninterrupted = config.copy_and_resolve_references()
    uninterrupted.train.checkpoint_every = 1000
    trainer.train(uninterrupted, extended, stop_at=last + 3)
    expected = _losses(extended)
  assert all(logged[s] == expected[s] for s in logged)  # the same losses in another process
  state = trainer.train(config, workdir, stop_at=last + 3)
  assert int(state.step) == last + 3
  losses = _losses(workdir)
  assert all(losses[s] == expected[s] for s in range(last + 1, last + 4))


def test_missing_batch_keys_are_named(config, tmp_path):
  feed = DataFeed(lambda split, phase: iter([{"tokens": np.zeros((4, 32), np.int32)}]), lambda step: 0)
  with pytest.raises(ValueError, match="missing"):
    trainer.train(config, str(tmp_path), feed, stop_at=1)
