"""Sampling: jitted batched generation, chat templates, Markovian RSA and Delethink chunked rollouts."""

from zaya_jax.sampling.chat import (ByteChatTemplate, ChatTemplate, ChatTemplateError, JinjaChatTemplate,
                                    load_chat_template, reply_stop_tokens)
from zaya_jax.sampling.generation import (GREEDY, GenerateOutput, Sampling, compiled_generate, default_stop_tokens,
                                          filter_logits, generate, sample_logits)
from zaya_jax.sampling.rsa import (AggregationTemplate, Delethink, PromptBuilder, RoundResult, Rollouts,
                                   RSAConfig, RSAConfigError, draw_candidates, left_pad, majority_vote,
                                   markovian_rsa, rollout)

__all__ = [
    "AggregationTemplate", "ByteChatTemplate", "ChatTemplate", "ChatTemplateError", "Delethink", "GREEDY",
    "GenerateOutput", "JinjaChatTemplate", "PromptBuilder", "RSAConfig", "RSAConfigError", "RoundResult",
    "Rollouts", "Sampling", "compiled_generate", "default_stop_tokens", "draw_candidates", "filter_logits",
    "generate", "left_pad", "load_chat_template", "majority_vote", "markovian_rsa", "reply_stop_tokens", "rollout",
    "sample_logits",
]
