"""zaya_jax: the ZAYA1 MoE++ model in JAX.

Public API (stable names):
  ZayaConfig, load_hf_checkpoint, save_hf_checkpoint, forward, count_params,
  init_params, init_decode_state, prefill, decode_step.
"""

from zaya_jax.api import (InputError, count_params, decode_step, forward, init_decode_state, init_params,
                          positions_from_mask, prefill)
from zaya_jax.checkpoint import CheckpointError, load_hf_checkpoint, save_hf_checkpoint
from zaya_jax.config import ConfigError, ZayaConfig

__all__ = [
    "CheckpointError", "ConfigError", "InputError", "ZayaConfig", "count_params", "decode_step", "forward",
    "init_decode_state", "init_params", "load_hf_checkpoint", "positions_from_mask", "prefill",
    "save_hf_checkpoint",
]
