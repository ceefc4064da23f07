"""The numerical oracle: transformers' ZayaForCausalLM (PyTorch, CPU) with every parameter and buffer randomised."""

from __future__ import annotations

import numpy as np
import torch
import transformers

from zaya_jax.checkpoint import params_from_tensors
from zaya_jax.config import ZayaConfig


def hf_config(config: ZayaConfig, attn_implementation: str = "eager") -> transformers.ZayaConfig:
  hf = config.to_hf()
  for key in ("architectures", "model_type", "dtype"):
    hf.pop(key)
  out = transformers.ZayaConfig(**hf)
  out._attn_implementation = attn_implementation
  return out


def _random_value(name: str, shape, gen: torch.Generator) -> torch.Tensor:
  """Values that keep activations O(1) while exercising every term (no parameter left at its init)."""
  randn = lambda: torch.randn(shape, generator=gen, dtype=torch.float64)
  if name.endswith("balancing_biases"):
    value = 0.1 * randn()
    value[-1] = 0.03  # the skip route wins for some tokens
    return value
  if name.endswith("qk_norm.temp"):
    return 1.0 + 0.3 * randn()
  if name.endswith(("_scale", "norm.weight", "layernorm.weight")):
    return 1.0 + 0.2 * randn()
  if name.endswith(("bias", "_bias")):
    return 0.1 * randn()
  if "embed_tokens" in name:
    return randn()
  if "conv_qk" in name:
    fan_in = shape[1] * shape[2]
    return randn() / np.sqrt(fan_in)
  fan_in = shape[-1]
  return randn() / np.sqrt(fan_in)


def random_hf_model(config: ZayaConfig, seed: int = 0, torch_dtype=torch.float32, attn_implementation="eager"):
  """A transformers ZayaForCausalLM of `config` with all parameters and buffers randomised."""
  torch.manual_seed(seed)
  model = transformers.ZayaForCausalLM(hf_config(config, attn_implementation)).eval()
  gen = torch.Generator().manual_seed(seed)
  state = model.state_dict()
  with torch.no_grad():
    for name, tensor in state.items():
      if name == "lm_head.weight" or "rotary_emb" in name:
        continue
      tensor.copy_(_random_value(name, tuple(tensor.shape), gen).to(tensor.dtype))
  model = model.to(torch_dtype)
  if torch_dtype != torch.float32:  # keep the balancing biases fp32, as a bf16-constructed model does
    for module in model.modules():
      if hasattr(module, "balancing_biases"):
        module.balancing_biases.data = module.balancing_biases.data.float()
  return model


def hf_state_arrays(model):
  """(name, numpy fp32 array) for every tensor of the model's state dict (the tied head included)."""
  for name, tensor in model.state_dict().items():
    if "rotary_emb" in name:
      continue
    yield name, tensor.detach().to(torch.float32).numpy()


def jax_params_from_hf(model, config: ZayaConfig, dtype="float32"):
  return params_from_tensors(config, hf_state_arrays(model), dtype=dtype)


def hf_logits(model, input_ids, attention_mask=None, position_ids=None) -> np.ndarray:
  with torch.no_grad():
    out = model(input_ids=torch.as_tensor(np.asarray(input_ids), dtype=torch.long),
                attention_mask=None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask)),
                position_ids=None if position_ids is None else torch.as_tensor(np.asarray(position_ids)),
                use_cache=False)
  return out.logits.to(torch.float32).numpy()
