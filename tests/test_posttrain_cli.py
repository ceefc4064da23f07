"""The stage pipeline (zaya_jax/posttrain/stages.py) and experiments/posttrain.py: two tiny SFT stages run in
order from one checkpoint each; a re-run skips finished stages and resumes an interrupted one.

The stage configs are test_posttrain_sft's (same model and schedule), so when both files run in one pytest
process the trainer's and the decoder's compiled programs are shared.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from test_posttrain_sft import STEPS, tiny_model, write_chat_jsonl
from zaya_jax import save_hf_checkpoint
from zaya_jax.loading import load_model
from zaya_jax.posttrain import heldout, sft, stages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_CONFIG = '''
from test_posttrain_sft import sft_test_config


def get_config():
  config = sft_test_config({jsonl!r})
  config.train.seed = {seed}
  return config
'''


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("init"))
  save_hf_checkpoint(path, *tiny_model())
  return path


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("stage_configs")
  jsonl_path = write_chat_jsonl(directory / "chat.jsonl")
  for name, seed in (("sft_a", 0), ("sft_b", 1)):
    (directory / f"{name}.py").write_text(STAGE_CONFIG.format(jsonl=jsonl_path, seed=seed))
  return str(directory)


def _pipeline_config(config_dir):
  config = stages.load_config_file(os.path.join(REPO, "configs", "posttrain", "pipeline.py"))
  config.update(stages="sft_a, sft_b", config_dir=config_dir)
  return config


def test_pipeline_chains_stages_and_resumes(config_dir, init_checkpoint, tmp_path, capsys):
  workdir = str(tmp_path / "post")
  result = stages.run(_pipeline_config(config_dir), workdir, init_checkpoint)
  a, b = (os.path.join(workdir, name) for name in ("sft_a", "sft_b"))
  assert [r["stage"] for r in result["stages"]] == ["sft_a", "sft_b"]
  summary_a, summary_b = (json.load(open(os.path.join(d, stages.SUMMARY_FILE))) for d in (a, b))
  assert summary_a["init"] == init_checkpoint and summary_b["init"] == a  # each stage starts from the previous
  # Stage b's score before training is stage a's after training, reused (stages.reuse_heldout) because decoding
  # a's final checkpoint (greedy, and sampled with the config's seed) repeats it exactly:
  assert summary_b["heldout_init"] == summary_a["heldout"]
  loaded_a = load_model(a)
  config_b = stages.load_config_file(os.path.join(config_dir, "sft_b.py"))
  again = heldout.evaluate_heldout(loaded_a.params, loaded_a.config, loaded_a.tokenizer, loaded_a.chat_template,
                                   config_b.heldout.to_dict())
  assert json.loads(json.dumps(again)) == summary_a["heldout"]
  # Not reused when the measurement could differ: other held-out problems, or a model group (e.g. a dtype).
  for change in (lambda c: c.heldout.update(count=3), lambda c: c.update(model={"dtype": "bfloat16"})):
    config = stages.load_config_file(os.path.join(config_dir, "sft_b.py"))
    change(config)
    assert not stages.reuse_heldout(a, config, str(tmp_path / "fresh"))
  # Whether the previous stage scored its own init is not part of the measurement.
  previous = tmp_path / "previous"
  previous.mkdir()
  shutil.copy(os.path.join(a, stages.SUMMARY_FILE), previous)
  previous_config = json.load(open(os.path.join(a, "config.json")))
  previous_config["heldout"]["evaluate_init"] = False
  (previous / "config.json").write_text(json.dumps(previous_config))
  assert stages.reuse_heldout(str(previous), config_b, str(tmp_path / "fresh"))
  assert not stages.reuse_heldout(a, config_b, str(tmp_path / "fresh"))  # already there
  b_params = load_model(b).params
  assert "held-out accuracy by stage" in capsys.readouterr().out

  # A re-run skips both; after losing stage b's last checkpoint and summary (killed late in its run) it resumes
  # b from its step-4 checkpoint and ends with the same params.
  assert stages.run(_pipeline_config(config_dir), workdir, init_checkpoint) == result
  assert capsys.readouterr().out.count("finished earlier, skipping") == 2
  shutil.rmtree(os.path.join(b, "checkpoints", str(STEPS)))
  os.remove(os.path.join(b, stages.SUMMARY_FILE))
  assert stages.run(_pipeline_config(config_dir), workdir, init_checkpoint)["stages"] == result["stages"]
  out = capsys.readouterr().out
  assert "stage sft_a: finished earlier" in out and "resumed from checkpoint step 4" in out
  jax.tree.map(np.testing.assert_array_equal, load_model(b).params, b_params)

  # The command line: the same pipeline, all finished, through experiments/posttrain.py.
  cmd = [sys.executable, "experiments/posttrain.py", "--config=configs/posttrain/pipeline.py",
         f"--config.config_dir={config_dir}", "--config.stages=sft_a,sft_b", f"--workdir={workdir}",
         f"--init={init_checkpoint}"]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count("finished earlier, skipping") == 2 and "sft_b" in proc.stdout


def test_interrupted_stage_stops_the_pipeline(config_dir, init_checkpoint, tmp_path, monkeypatch, capsys):
  """A stage that returns without a summary (SIGTERM) ends the pipeline there; later stages do not start."""
  calls = []
  monkeypatch.setattr(sft, "run", lambda config, workdir, init: calls.append(workdir))
  assert stages.run(_pipeline_config(config_dir), str(tmp_path), init_checkpoint) is None
  assert calls == [str(tmp_path / "sft_a")]
  assert "stage sft_a: interrupted" in capsys.readouterr().out


def test_stage_errors(init_checkpoint, tmp_path):
  config = stages.load_config_file(os.path.join(REPO, "configs", "posttrain", "sft.py"))
  config.stage = "distill"
  with pytest.raises(stages.StageError, match="config.stage must be one of"):
    stages.run(config, str(tmp_path), init_checkpoint)
  config.stage = "sft"
  config.model = dict(hidden_size=64, dtype="bfloat16")  # dtype is a runtime choice; the width is not
  with pytest.raises(stages.StageError, match=r"contradicts the init checkpoint: hidden_size=64 \(checkpoint: 32\)"):
    stages.run(config, str(tmp_path), init_checkpoint)
  pipeline = _pipeline_config(str(tmp_path))
  pipeline.stages = "sft_a,sft_a"
  with pytest.raises(stages.StageError, match="distinct stages"):
    stages.run(pipeline, str(tmp_path), init_checkpoint)


def test_every_default_stage_has_a_config_file():
  configs = {name: stages.load_config_file(os.path.join(REPO, "configs", "posttrain", f"{name}.py"))
             for name in stages.DEFAULT_STAGES}
  assert all(c.stage in stages.STAGE_KINDS for c in configs.values())
  first, second = configs["sft"], configs["sft_continue"]
  assert second.train.seed != first.train.seed  # the second SFT cycle sees other problems
  second.train.seed = first.train.seed
  assert second == first
