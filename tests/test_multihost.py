"""Multi-process training on one machine: 2 processes x 4 CPU devices (gloo collectives) = one 8-device mesh.

- Each process reads its own rows of every global batch (zaya_jax/train/feeds.py).
- Two processes log the losses of one process with 8 devices and the same global batch, write one checkpoint
  together and resume from it (slow: three processes compile the train step at once).
- experiments/pretrain.py with its multi-process flags, experts spread over both processes: its first losses
  equal one process's with 8 devices; a killed process makes the other exit with an error within a bounded
  time; SIGTERM to one process stops both at one step with a checkpoint (slow).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import ml_collections
import numpy as np
import pytest

import configs.tiny
from zaya_jax.train import feeds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, RESUME_AT, HEARTBEAT_S = 4, 2, 10

MODEL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
             head_dim=16, moe_intermediate_size=32, num_experts=8, router_hidden_size=8, eos_token_id=1)

# Run by the reference process (argv: workdir) and by each of the two processes (argv: workdir, port, id).
_TRAIN = textwrap.dedent(f"""
    import os, sys
    workdir, two = sys.argv[1], len(sys.argv) > 2
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + ("4" if two else "8")
    from zaya_jax import distributed
    if two:
      assert distributed.initialize("127.0.0.1:" + sys.argv[2], 2, int(sys.argv[3]), heartbeat_timeout_seconds=60)
    import jax, ml_collections
    import configs.tiny
    from zaya_jax.train import trainer
    assert jax.device_count() == 8 and jax.process_count() == (2 if two else 1)
    config = configs.tiny.get_config()
    del config["data"]  # synthetic documents
    config.model = ml_collections.ConfigDict({MODEL!r})
    config.mesh = ml_collections.ConfigDict(dict(expert=8))  # experts and batch rows over both processes
    config.optim.name = "adamw"
    config.train.update(steps={STEPS}, batch_size=8, seq_len=16, log_every=1, eval_every={STEPS}, eval_batches=1,
                        checkpoint_every=100)
    if two:  # a checkpoint at step {RESUME_AT}, then a new train call restores it on both processes
      trainer.train(config, workdir, stop_at={RESUME_AT})
    state = trainer.train(config, workdir)
    print("trained to step", int(state.step), flush=True)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(args, log_path, extra_env=None):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  env.update(extra_env or {})
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _read(path) -> str:
  with open(path) as f:
    return f.read()


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_processes_read_their_rows_of_each_global_batch():
  config = ml_collections.ConfigDict(dict(model=dict(vocab_size=50), train=dict(batch_size=6, seq_len=12, seed=3)))
  one = feeds.synthetic_feed(config).iterator("train", 0)
  three = [feeds.synthetic_feed(config, p, 3).iterator("train", 0) for p in range(3)]
  for _ in range(3):
    batch = next(one)
    parts = [next(it) for it in three]
    assert all(part["tokens"].shape == (2, 12) for part in parts)
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([part[key] for part in parts]), batch[key])
  assert [feeds.process_row(i, 6, 1, 3) for i in range(5)] == [2, 3, 8, 9, 14]
  with pytest.raises(ValueError, match="train.batch_size=6 .* must be a positive multiple of the 4 processes"):
    feeds.synthetic_feed(config, 0, 4)


def test_pipeline_processes_read_their_share_of_the_global_batch():
  config = configs.tiny.get_config()
  config.train.update(batch_size=4, seq_len=32, eval_batches=1)
  train, evals = [], []
  for p in range(2):
    feed = feeds.pipeline_feed(config, p, 2)
    train.append(next(feed.iterator("train", 0))["tokens"])
    evals.append(next(feed.iterator("eval", 0))["tokens"])
  assert [t.shape for t in train] == [(2, config.data.phases[0]["seq_len"])] * 2
  assert [e.shape for e in evals] == [(2, 32)] * 2
  assert not np.array_equal(*train) and not np.array_equal(*evals)  # each from its own documents


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The reference (1 process, 8 devices) and the two processes, started at once -> (reference dir, two-process
  dir, output of process 0)."""
  root = tmp_path_factory.mktemp("multihost")
  reference, two = str(root / "reference"), str(root / "two")
  port = str(_free_port())
  procs = [_start(["-c", _TRAIN, reference], root / "reference.log")]
  procs += [_start(["-c", _TRAIN, two, port, str(i)], root / f"process{i}.log") for i in range(2)]
  logs = [root / "reference.log", root / "process0.log", root / "process1.log"]
  try:
    for proc, log in zip(procs, logs):
      assert proc.wait(timeout=900) == 0, f"{log}:\n{_read(log)[-5000:]}"
  finally:
    for proc in procs:
      proc.kill()
  return reference, two, _read(logs[1])


@pytest.mark.slow
def test_two_processes_train_like_one(runs):
  """Same losses within float rounding: across processes the 8 devices' partial sums (loss, gradients) are
  added by gloo, in another order than XLA:CPU's in-process all-reduce, so last bits may differ (seen: equal
  losses, grad norms 1 ulp apart, final params within 6e-8)."""
  reference, two, _ = runs
  expected, got = _records(reference), _records(two)
  assert [r["step"] for r in got] == [1, 2, 3, 4, 4]  # process 0 alone writes, each step once
  for want, have in zip(expected, got):
    for key in ("loss", "grad_norm", "eval_loss"):
      if key in want:
        np.testing.assert_allclose(have[key], want[key], rtol=1e-6, err_msg=f"{key} at step {want['step']}")
    if "load" in want:
      np.testing.assert_array_equal(have["load"], want["load"])  # the same tokens went to the same experts
  assert os.path.exists(os.path.join(two, "config.json")) and os.path.exists(os.path.join(two, "training.png"))


@pytest.mark.slow
def test_checkpoint_of_two_processes_resumes_and_loads(runs):
  """Each process wrote its data position; the arrays were written once; both processes resumed from step 2,
  and one process reads the final params (zaya_jax.loading) equal to the reference's."""
  from zaya_jax.loading import load_model

  reference, two, output = runs
  assert f"resumed from checkpoint step {RESUME_AT}" in output
  for step in (RESUME_AT, STEPS):
    data = sorted(os.listdir(os.path.join(two, "checkpoints", str(step), "data")))
    assert [f for f in data if f.startswith("process_")] == ["process_0-of-2.json", "process_1-of-2.json"]
  want, have = load_model(reference).params, load_model(two).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6), want, have)


def _pretrain_job(root, name: str):
  """experiments/pretrain.py (a long run of the tiny model on synthetic data) as 2 processes of 4 devices with
  its multi-process flags -> (processes, their log files, workdir)."""
  config_file = root / "config.py"
  config_file.write_text(textwrap.dedent(f"""
      import ml_collections
      import configs.tiny

      def get_config():
        config = configs.tiny.get_config()
        del config["data"]
        config.model = ml_collections.ConfigDict({MODEL!r})
        config.mesh = ml_collections.ConfigDict(dict(expert=8))  # experts and batch rows over both processes
        config.optim.name = "adamw"
        config.train.update(steps=100000, batch_size=8, seq_len=16, log_every=1, checkpoint_every=1000)
        return config
  """))
  port, workdir = _free_port(), root / name
  logs = [root / f"{name}_process{i}.log" for i in range(2)]
  procs = [_start(["experiments/pretrain.py", f"--config={config_file}", f"--workdir={workdir}",
                   f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
                   f"--heartbeat_timeout={HEARTBEAT_S}"], logs[i],
                  {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}) for i in range(2)]
  return procs, logs, workdir


def _wait_for(condition, procs, logs, timeout_s: float = 300):
  deadline = time.time() + timeout_s
  while not condition():
    assert time.time() < deadline and all(p.poll() is None for p in procs), [_read(log)[-3000:] for log in logs]
    time.sleep(0.5)


# The reference for the pretrain jobs: the same config file in one process with 8 devices, LOSS_STEPS steps.
_REFERENCE = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import importlib.util
    spec = importlib.util.spec_from_file_location("job_config", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from zaya_jax.train import trainer
    trainer.train(module.get_config(), sys.argv[2], stop_at=int(sys.argv[3]))
""")
LOSS_STEPS = 3


@pytest.fixture(scope="module")
def killed_jobs(tmp_path_factory):
  """Two 2-process jobs of experiments/pretrain.py and the one-process reference, started at once. Once both
  processes have joined, job 0 loses its process 0 (the coordinator); once job 1 has logged LOSS_STEPS steps,
  it loses its process 1 -> (reference workdir, job 1 workdir, [(victim, survivor's exit code, seconds from
  the kill to its exit, survivor's output)])."""
  root = tmp_path_factory.mktemp("killed")
  jobs = [(victim, *_pretrain_job(root, f"job{victim}")) for victim in (0, 1)]
  reference = root / "reference"
  ref = _start(["-c", _REFERENCE, str(root / "config.py"), str(reference), str(LOSS_STEPS)], root / "reference.log")
  outcomes = []

  def kill_and_wait(victim, procs, logs):
    killed_at = time.time()
    procs[victim].send_signal(signal.SIGKILL)
    code = procs[1 - victim].wait(timeout=HEARTBEAT_S + 110)
    outcomes.append((victim, code, time.time() - killed_at, _read(logs[1 - victim])))

  try:
    for victim, procs, logs, workdir in jobs:
      _wait_for(lambda: all(f"process {i} of 2" in _read(log) for i, log in enumerate(logs)), procs, logs)
      if victim == 1:
        metrics = os.path.join(workdir, "metrics.jsonl")
        _wait_for(lambda: os.path.exists(metrics) and _read(metrics).count("\n") >= LOSS_STEPS, procs, logs, 600)
      kill_and_wait(victim, procs, logs)
    assert ref.wait(timeout=600) == 0, _read(root / "reference.log")[-3000:]
  finally:
    for proc in [ref] + [p for _, procs, _, _ in jobs for p in procs]:
      proc.kill()
  return reference, jobs[1][3], outcomes


def test_two_processes_train_like_one_process(killed_jobs):
  """pretrain.py's first losses with the tiny model's 8 experts spread over 2 processes x 4 devices (gloo)
  equal those of 1 process x 8 devices with the same global batch, within float rounding of the cross-process
  sums (the slow test below compares a whole run, evaluation and resume included)."""
  reference, job, _ = killed_jobs
  expected, got = _records(reference), _records(job)[:LOSS_STEPS]
  assert [r["step"] for r in got] == [r["step"] for r in expected] == list(range(1, LOSS_STEPS + 1))
  for want, have in zip(expected, got):
    for key in ("loss", "grad_norm"):
      np.testing.assert_allclose(have[key], want[key], rtol=1e-6, err_msg=f"{key} at step {want['step']}")
    np.testing.assert_array_equal(have["load"], want["load"])  # the same tokens went to the same experts


def test_a_killed_process_stops_the_other(killed_jobs):
  """One job loses its process 1, the other its process 0 (the coordinator). Each survivor exits with the
  distributed runtime's error within the heartbeat timeout plus slack."""
  for victim, code, elapsed, output in killed_jobs[2]:
    assert code != 0, output[-3000:]
    assert "JAX distributed service detected fatal errors" in output, output[-3000:]
    print(f"process {victim} killed: process {1 - victim} exited with code {code} after {elapsed:.1f}s")


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step(tmp_path):
  """Preemption of one host: both processes finish the same step, save one checkpoint together and exit 0."""
  procs, logs, workdir = _pretrain_job(tmp_path, "job")
  metrics = os.path.join(workdir, "metrics.jsonl")
  try:
    _wait_for(lambda: os.path.exists(metrics) and _read(metrics).count("\n") >= 2, procs, logs, timeout_s=600)
    procs[1].send_signal(signal.SIGTERM)
    assert [p.wait(timeout=120) for p in procs] == [0, 0], [_read(log)[-3000:] for log in logs]
  finally:
    for proc in procs:
      proc.kill()
  last = _records(workdir)[-1]["step"]
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(last)]
  assert all(f"stopped at step {last} of 100000" in _read(log) for log in logs)
