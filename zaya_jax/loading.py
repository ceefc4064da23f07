"""One loader for every kind of model checkpoint this codebase reads: `load_model(path)`.

Two layouts are recognised:
- a transformers-format directory: `config.json` with `model_type` "zaya", safetensors weights, and optionally
  `tokenizer.json` and a `tokenizer_config.json` holding the chat template;
- a training workdir written by zaya_jax (pretraining or a post-training stage): `config.json` holding the
  run's config (its `model` group is a ZayaConfig; `data.tokenizer` names the tokenizer, default the byte
  tokenizer) and orbax checkpoints `checkpoints/<step>/state`, a pytree with a "params" entry. Only the params
  are read (the optimiser state of an 8B run is twice their size).

The chat template: the checkpoint's own (HF directories with one), else the built-in byte template when the
tokenizer is the byte tokenizer; a workdir whose tokenizer is a `tokenizer.json` takes the template from the
`tokenizer_config.json` beside it.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from zaya_jax.api import init_params
from zaya_jax.checkpoint import CheckpointError, load_hf_checkpoint
from zaya_jax.config import ZayaConfig
from zaya_jax.data.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer
from zaya_jax.sampling.chat import ByteChatTemplate, ChatTemplate, ChatTemplateError, load_chat_template

CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"


class LoadedModel(NamedTuple):
  """params: the model's parameter pytree; step: the training step of a workdir checkpoint (None for HF)."""
  params: Any
  config: ZayaConfig
  tokenizer: Tokenizer
  chat_template: ChatTemplate
  step: int | None


def load_model(path: str, *, dtype: str | None = None, step: int | None = None) -> LoadedModel:
  """Loads an HF-format directory or a zaya_jax training workdir (module docstring).

  dtype: parameter and compute dtype ("float32" or "bfloat16"); default float32 for HF directories and the
  run's own for workdirs. step: a workdir's checkpoint step (default the newest).
  """
  path = os.fspath(path)
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise CheckpointError(f"{path} is not a checkpoint: it has no {CONFIG_FILE}")
  with open(config_path) as f:
    raw = json.load(f)
  if "model" in raw and isinstance(raw["model"], dict):
    return _load_workdir(path, raw, dtype, step)
  if step is not None:
    raise CheckpointError(f"{path} is a transformers-format directory; it has no training steps to choose from")
  config, params = load_hf_checkpoint(path, dtype=dtype or "float32")
  has_tokenizer = os.path.isfile(os.path.join(path, "tokenizer.json"))
  tokenizer = load_tokenizer(path if has_tokenizer else "byte")
  return LoadedModel(params, config, tokenizer, _chat_template(tokenizer, path), None)


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of the complete checkpoints in a training workdir, ascending."""
  directory = os.path.join(workdir, CHECKPOINTS_DIR)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name, "state")))


def _load_workdir(path: str, raw: dict, dtype: str | None, step: int | None) -> LoadedModel:
  model = dict(raw["model"])
  if dtype is not None:
    model.update(dtype=dtype, param_dtype=dtype)
  config = ZayaConfig.from_dict(model)
  steps = checkpoint_steps(path)
  if not steps:
    raise CheckpointError(f"training workdir {path} has no checkpoint under {CHECKPOINTS_DIR}/")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise CheckpointError(f"training workdir {path} has no checkpoint of step {step}; it has {steps}")
  abstract = jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))
  # The saved params may be in another dtype (fp32 master weights, bf16 serving): restore as stored, then cast.
  target = {"params": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract)}
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=jax.sharding.SingleDeviceSharding(
      jax.devices()[0])), target)
  state_dir = os.path.join(path, CHECKPOINTS_DIR, str(step), "state")
  try:
    restored = ocp.PyTreeCheckpointer().restore(
        state_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
  except Exception as e:  # noqa: BLE001 - orbax raises many types; the path and step are what the user needs
    raise CheckpointError(f"cannot read the params of {state_dir} as a {config.num_hidden_layers}-layer model "
                          f"({type(e).__name__}: {e})") from e
  params = jax.tree.map(lambda a, ref: jnp.asarray(a, ref.dtype), restored["params"], abstract)
  spec = (raw.get("data") or {}).get("tokenizer", "byte")
  tokenizer = load_tokenizer(spec)
  return LoadedModel(params, config, tokenizer, _chat_template(tokenizer, None if spec == "byte" else spec), step)


def _chat_template(tokenizer: Tokenizer, location: str | None) -> ChatTemplate:
  """The template stored at `location` (a directory, or a file in one), else the byte template if it fits."""
  if location is not None:
    directory = location if os.path.isdir(location) else os.path.dirname(location)
    try:
      return load_chat_template(directory)
    except ChatTemplateError:
      pass  # no stored template: the byte tokenizer still has its built-in one
  if isinstance(tokenizer, ByteTokenizer):
    return ByteChatTemplate()
  raise CheckpointError(f"no chat template for {tokenizer!r}: put a tokenizer_config.json with a chat_template "
                        f"beside its tokenizer.json")
