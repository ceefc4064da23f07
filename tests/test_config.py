"""ZayaConfig validation, config.json translation, the ml_collections configs and parameter counts."""

import importlib
import json

import pytest
import transformers

from zaya_jax import ConfigError, ZayaConfig, count_params


def test_zaya1_8b_parameter_counts():
  counts = count_params(ZayaConfig())
  assert counts == {"total": 8_840_488_784, "non_embedding": 8_303_355_728, "active": 1_290_741_584,
                    "active_non_embedding": 753_608_528}


@pytest.mark.parametrize("name", ["tiny", "zaya1_8b"])
def test_config_files_build_valid_model_configs(name):
  cfg = importlib.import_module(f"configs.{name}").get_config()
  model = ZayaConfig.from_dict(cfg.model.to_dict())
  if name == "zaya1_8b":
    assert model == ZayaConfig(dtype="bfloat16", param_dtype="float32")
  else:
    assert count_params(model)["total"] < 5_000_000


@pytest.mark.parametrize("changes, message", [
    ({"num_attention_heads": 6, "num_key_value_heads": 4}, "must be a multiple of num_key_value_heads"),
    ({"num_experts_per_tok": 2}, "num_experts_per_tok must be 1"),
    ({"layer_types": ("hybrid", "global")}, "layer_types has 2 entries but num_hidden_layers is 40"),
    ({"num_hidden_layers": 2, "layer_types": ("hybrid", "global")}, r"unknown layer_types \['global'\]"),
    ({"num_hidden_layers": 1, "layer_types": ("hybrid_sliding",)}, "sliding_window must be set"),
    ({"hidden_size": 0}, "hidden_size must be a positive integer"),
    ({"head_dim": 10, "partial_rotary_factor": 0.3}, "rotary dim .* must be even"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings=False is not supported"),
    ({"dtype": "float64"}, "dtype must be one of"),
    ({"eos_token_id": 300000}, r"eos_token_id=300000 is outside the vocabulary"),
    ({"hidden_act": "gelu"}, "hidden_act must be 'silu'"),
    ({"router_impl": "triton"}, "router_impl must be one of"),
])
def test_invalid_configs_raise_clear_errors(changes, message):
  with pytest.raises(ConfigError, match=message):
    ZayaConfig(**changes)


def _hub_style_config():
  """config.json as the ZAYA1-8B hub repo carries it (nested rope_parameters plus a stray rope_type)."""
  return {
      "architectures": ["ZayaForCausalLM"], "model_type": "zaya", "vocab_size": 262272, "hidden_size": 2048,
      "num_hidden_layers": 40, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128,
      "moe_intermediate_size": 2048, "num_experts": 16, "num_experts_per_tok": 1, "router_hidden_size": 256,
      "cca_time0": 2, "cca_time1": 2, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": True,
      "bos_token_id": 2, "eos_token_id": 106, "pad_token_id": 0, "max_position_embeddings": 131072,
      "sliding_window": None, "attention_bias": False, "lm_head_bias": False, "dtype": "bfloat16",
      "transformers_version": "5.23.0", "use_cache": True,
      "rope_parameters": {"hybrid": {"rope_type": "default", "rope_theta": 5000000.0,
                                     "partial_rotary_factor": 0.5},
                          "rope_type": "default"},
  }


def test_from_hf_reads_the_hub_config(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(_hub_style_config()))
  assert ZayaConfig.from_hf(tmp_path) == ZayaConfig()
  assert ZayaConfig.from_hf(tmp_path, dtype="bfloat16").dtype == "bfloat16"


def test_to_hf_round_trips_through_transformers():
  config = ZayaConfig(num_hidden_layers=3, layer_types=("hybrid", "hybrid_sliding", "hybrid"), sliding_window=64,
                      rope_theta=1e6, sliding_rope_theta=1e4, eos_token_id=(1, 106))
  assert ZayaConfig.from_hf(config.to_hf()) == config
  hf = transformers.ZayaConfig(**{k: v for k, v in config.to_hf().items() if k not in ("architectures", "dtype")})
  assert hf.rope_parameters["hybrid_sliding"]["rope_theta"] == 1e4
  assert ZayaConfig.from_hf(hf.to_dict()) == config.replace(dtype="float32")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(model_type="llama"), "model_type is 'llama'"),
    (lambda c: c.update(num_experts_per_tok=2), "num_experts_per_tok must be 1"),
    (lambda c: c.update(lm_head_bias=True), "lm_head_bias=True is not supported"),
    (lambda c: c.update(qk_layernorm=True), r"keys this implementation does not know: \['qk_layernorm'\]"),
    (lambda c: c["rope_parameters"]["hybrid"].update(rope_type="yarn"), "rope_type='yarn' is not supported"),
    (lambda c: c["rope_parameters"].update(hybrid_sliding={"rope_theta": 1e4, "partial_rotary_factor": 1.0}),
     "partial_rotary_factor differs"),
])
def test_from_hf_rejects_what_it_cannot_represent(edit, message):
  config = _hub_style_config()
  edit(config)
  with pytest.raises(ConfigError, match=message):
    ZayaConfig.from_hf(config)
