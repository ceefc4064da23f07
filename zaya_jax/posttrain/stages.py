"""Post-training stages: what every stage shares, the dispatch on `config.stage`, and the stage pipeline.

A stage is `run(config, workdir, init) -> params` (zaya_jax.posttrain.sft.run for "sft",
zaya_jax.posttrain.rl.run for "rl"). `init` is anything `zaya_jax.loading.load_model` reads: an HF-format
directory or a training workdir, e.g. the previous stage's. Stage configs do not repeat the architecture:
`start_stage` fills `config.model` from the init checkpoint (a field the stage config does set must agree with
it, except the runtime fields `RUNTIME_MODEL_FIELDS`) and `config.data.tokenizer` from its tokenizer, so the
stage's workdir (config.json + checkpoints with "params") is itself loadable by `load_model`.

A stage's workdir is finished once `finish_stage` has written summary.json: the held-out accuracy of the
final params (zaya_jax/posttrain/heldout.py), and that of the init checkpoint (`heldout_init`), scored before
the first step when `config.heldout.evaluate_init` is set.

The pipeline (configs/posttrain/pipeline.py) runs `config.stages` in order, stage `name` in `<workdir>/<name>`
with the config `<config.config_dir>/<name>.py`, each from the previous stage's workdir (the first from
`init`). A finished stage is skipped and an interrupted one resumes from its newest checkpoint, so re-running
the same command continues where it stopped. A stage's `heldout_init` is the previous stage's final held-out
result when that is the same measurement (`reuse_heldout`), so each checkpoint is decoded once.
`<workdir>/summary.json` collects the per-stage accuracies.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

import jax
import ml_collections

from zaya_jax.config import ZayaConfig
from zaya_jax.data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer
from zaya_jax.loading import LoadedModel, checkpoint_steps, load_model
from zaya_jax.posttrain import heldout

SUMMARY_FILE = "summary.json"
INIT_HELDOUT_FILE = "heldout_init.json"
STAGE_KINDS = ("sft", "rl")
DEFAULT_STAGES = ("sft", "sft_continue", "rl_warmup", "rl_envs", "rl_math_code_ttc", "rl_code", "rl_behavior")
# Model fields a stage may choose itself: they change how the model runs, not what it computes.
RUNTIME_MODEL_FIELDS = ("dtype", "moe_impl", "moe_block_size", "moe_capacity_factor", "moe_transport", "router_impl")


class StageError(ValueError):
  """A stage or pipeline config that cannot run (unknown stage kind, a model group the checkpoint contradicts)."""


def tokenizer_spec(tokenizer: Tokenizer) -> str:
  """The `data.tokenizer` string `load_model` reads back: "byte" or the tokenizer.json path."""
  if isinstance(tokenizer, ByteTokenizer):
    return "byte"
  if isinstance(tokenizer, HFTokenizer):
    return tokenizer.name
  raise StageError(f"cannot record tokenizer {tokenizer!r} in a workdir config")


def with_checkpoint_model(config: ml_collections.ConfigDict, model_config: ZayaConfig,
                          tokenizer: Tokenizer) -> ml_collections.ConfigDict:
  """An unlocked copy of `config` whose `model` is the checkpoint's architecture (plus the runtime fields the
  config sets) and whose `data.tokenizer` names the checkpoint's tokenizer."""
  out = ml_collections.ConfigDict(config.to_dict())
  given = out.model.to_dict() if "model" in out else {}
  merged = ZayaConfig.from_dict({**dataclasses.asdict(model_config), **given})
  conflicts = [f"{name}={given[name]!r} (checkpoint: {getattr(model_config, name)!r})" for name in sorted(given)
               if name not in RUNTIME_MODEL_FIELDS and getattr(merged, name) != getattr(model_config, name)]
  if conflicts:
    raise StageError(f"the stage config's model group contradicts the init checkpoint: {', '.join(conflicts)}")
  out.model = ml_collections.ConfigDict(dataclasses.asdict(merged))
  out.data = ml_collections.ConfigDict({"tokenizer": tokenizer_spec(tokenizer)})
  return out


def stage_model(config: ml_collections.ConfigDict) -> ZayaConfig:
  """The model of a completed stage config: the checkpoint's architecture with the stage's runtime fields."""
  return ZayaConfig.from_dict(config.model.to_dict())


def read_json(path: str) -> dict | None:
  """The JSON object in `path`, or None if there is no such file."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_json(path: str, value: dict) -> None:
  """Writes through a temporary file, so a reader never sees half a file (summary.json marks a finished stage)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=1)
  os.replace(path + ".tmp", path)


def is_finished(workdir: str) -> bool:
  """Whether the stage in `workdir` has written its summary.json."""
  return os.path.isfile(os.path.join(workdir, SUMMARY_FILE))


def _init_heldout_pending(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Whether the init checkpoint's held-out score is still to be written: asked for, on a fresh workdir."""
  return (config.heldout.evaluate_init and not checkpoint_steps(workdir)
          and not os.path.isfile(os.path.join(workdir, INIT_HELDOUT_FILE)))


def start_stage(config: ml_collections.ConfigDict, workdir: str,
                init: str) -> tuple[ml_collections.ConfigDict, LoadedModel]:
  """Loads `init`, completes the config (`with_checkpoint_model`) and, on a fresh workdir with
  `config.heldout.evaluate_init`, scores the init checkpoint into <workdir>/heldout_init.json."""
  loaded = load_model(init)
  # Committed to the device as the trainer's single-device state is, so the held-out decoding of the init and
  # of the trained params share one compiled program.
  loaded = loaded._replace(params=jax.device_put(loaded.params, jax.devices()[0]))
  config = with_checkpoint_model(config, loaded.config, loaded.tokenizer)
  if _init_heldout_pending(config, workdir):
    result = heldout.evaluate_heldout(loaded.params, stage_model(config), loaded.tokenizer, loaded.chat_template,
                                      config.heldout.to_dict())
    print(f"{config.stage} init ({init}): {heldout.format_heldout(result)}", flush=True)
    write_json(os.path.join(workdir, INIT_HELDOUT_FILE), result)
  return config, loaded


def finish_stage(config: ml_collections.ConfigDict, workdir: str, init: str, params, loaded: LoadedModel,
                 **extra) -> dict:
  """Scores the final params on the held-out problems, prints the result and writes <workdir>/summary.json
  ({"stage", "init", "steps", "heldout", "heldout_init" (or None), "heldout_change" (`heldout.compare`, or
  None), **extra}); returns it."""
  result = heldout.evaluate_heldout(params, stage_model(config), loaded.tokenizer, loaded.chat_template,
                                    config.heldout.to_dict())
  init_result = read_json(os.path.join(workdir, INIT_HELDOUT_FILE))
  change = heldout.compare(init_result, result)
  print(f"{config.stage} final: {heldout.format_heldout(result)}"
        + (f"; change from init {heldout.format_change(change)}" if change else ""), flush=True)
  summary = {"stage": config.stage, "init": init, "steps": config.train.steps, "heldout": result,
             "heldout_init": init_result, "heldout_change": change, **extra}
  write_json(os.path.join(workdir, SUMMARY_FILE), summary)
  return summary


def run_stage(config: ml_collections.ConfigDict, workdir: str, init: str):
  """Runs (or resumes) one stage by its `config.stage` kind; returns its params."""
  kind = config.get("stage")
  if kind == "sft":
    from zaya_jax.posttrain import sft
    return sft.run(config, workdir, init)
  if kind == "rl":
    if importlib.util.find_spec("zaya_jax.posttrain.rl") is None:
      raise StageError("config.stage is 'rl' but zaya_jax.posttrain.rl is not available")
    from zaya_jax.posttrain import rl
    return rl.run(config, workdir, init)
  raise StageError(f"config.stage must be one of {STAGE_KINDS} or 'pipeline', got {kind!r}")


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of the Python config file at `path`."""
  if not os.path.isfile(path):
    raise StageError(f"no stage config file {path}")
  spec = importlib.util.spec_from_file_location(f"posttrain_stage_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def stage_names(config: ml_collections.ConfigDict) -> list[str]:
  """config.stages: a comma-separated string (easy to override on the command line) or a sequence."""
  stages = config.stages
  names = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
  if not names or len(set(names)) != len(names):
    raise StageError(f"config.stages must name distinct stages, got {stages!r}")
  return names


def _measurement(heldout_config: dict) -> dict:
  """The fields of a held-out config that decide its result (all but whether the init is scored)."""
  return {k: v for k, v in heldout_config.items() if k != "evaluate_init"}


def reuse_heldout(previous: str, config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Copies the previous stage's final held-out result to <workdir>/heldout_init.json when it is exactly what
  `start_stage` would compute (same held-out config, no `model` group to change how the params run; greedy
  decoding of the same params is deterministic, and so is sampling with the config's seed), so a pipeline scores
  each checkpoint once. Returns whether it did."""
  summary = read_json(os.path.join(previous, SUMMARY_FILE))
  previous_config = read_json(os.path.join(previous, "config.json"))
  if (summary is None or previous_config is None or "model" in config or not _init_heldout_pending(config, workdir)
      or _measurement(previous_config.get("heldout") or {}) != _measurement(config.heldout.to_dict())):
    return False
  write_json(os.path.join(workdir, INIT_HELDOUT_FILE), summary["heldout"])
  return True


def run_pipeline(config: ml_collections.ConfigDict, workdir: str, init: str) -> dict | None:
  """Runs the stages in order (module docstring). Returns the pipeline summary, or None if a stage was
  interrupted (SIGTERM; re-run to resume)."""
  previous, rows = init, []
  for name in stage_names(config):
    stage_dir = os.path.join(workdir, name)
    if is_finished(stage_dir):
      print(f"stage {name}: finished earlier, skipping", flush=True)
    else:
      print(f"stage {name}: starting from {previous}", flush=True)
      stage_config = load_config_file(os.path.join(config.config_dir, f"{name}.py"))
      reuse_heldout(previous, stage_config, stage_dir)
      run_stage(stage_config, stage_dir, previous)
      if not is_finished(stage_dir):
        print(f"stage {name}: interrupted; run the same command again to resume it", flush=True)
        return None
    summary = read_json(os.path.join(stage_dir, SUMMARY_FILE))
    rows.append({"stage": name, "workdir": stage_dir, "accuracy": summary["heldout"]["accuracy"],
                 "init_accuracy": (summary["heldout_init"] or {}).get("accuracy"),
                 "change": summary.get("heldout_change")})
    previous = stage_dir
  result = {"init": init, "stages": rows}
  write_json(os.path.join(workdir, SUMMARY_FILE), result)
  print("held-out accuracy by stage:\n" + "\n".join(
      f"  {r['stage']:<18} {r['accuracy']:.1%}" + (f" (from {r['init_accuracy']:.1%})"
                                                   if r["init_accuracy"] is not None else "")
      + (f", {heldout.format_change(r['change'])}" if r["change"] else "") for r in rows), flush=True)
  return result


def run(config: ml_collections.ConfigDict, workdir: str, init: str):
  """experiments/posttrain.py's entry: the pipeline for `config.stage == "pipeline"`, else one stage."""
  if config.get("stage") == "pipeline":
    return run_pipeline(config, workdir, init)
  return run_stage(config, workdir, init)
