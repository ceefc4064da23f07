"""Data: tokenizers, the built-in reasoning corpus, grain sources and the packed pretraining pipeline."""

from zaya_jax.data.config import (DataConfigError, Phase, default_pretrain_config, get_phase, phase_for_step,
                                  phases)
from zaya_jax.data.corpus import (FAMILIES, MATH_FAMILIES, CorpusError, check_answer, extract_boxed,
                                  format_record, generate_problem, make_record, split_of)
from zaya_jax.data.pipeline import BATCH_KEYS, loss_mask_from_segments, make_eval_batches, make_train_iterator
from zaya_jax.data.sources import (DataError, GeneratedTextSource, JsonlSource, ParquetSource, ProblemSource,
                                   SourceConfigError, TextSource, make_source)
from zaya_jax.data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, TokenizerError, load_tokenizer

__all__ = [
    "BATCH_KEYS", "ByteTokenizer", "CorpusError", "DataConfigError", "DataError", "FAMILIES",
    "GeneratedTextSource", "HFTokenizer", "JsonlSource", "MATH_FAMILIES", "ParquetSource", "Phase",
    "ProblemSource", "SourceConfigError", "TextSource", "Tokenizer", "TokenizerError", "check_answer",
    "default_pretrain_config", "extract_boxed", "format_record", "generate_problem", "get_phase",
    "load_tokenizer", "loss_mask_from_segments", "make_eval_batches", "make_record", "make_source",
    "make_train_iterator", "phase_for_step", "phases", "split_of",
]
