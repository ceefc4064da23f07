"""Markovian RSA sampling from a checkpoint (transformers-format directory or zaya_jax training workdir):
prompts JSONL in, results JSONL out.

  python experiments/rsa_sample.py --checkpoint=/tmp/toy --prompts=prompts.jsonl --output=out.jsonl \
      --population=16 --candidates=4 --rounds=2 --budget=16384 --tail=4096

Each input line needs a "question" (or "problem") field; "id" and "answer" are carried over, and with an
"answer" every candidate is scored with `check_answer` (last \\boxed{}). Each output line holds every
round's candidates (text, token count, whether a stop token ended it, extracted answer, which candidates its
prompt aggregated), the round-T majority vote and, with answers, mean accuracy over the final candidates
(avg@N) and majority-vote correctness. Token counts follow the ZAYA1 accounting: newly generated tokens only.
A progress line per round reports its time, generated tokens and peak host RSS.
"""

import json
import resource
import time

import jax
from absl import app, flags

from zaya_jax.data import ByteTokenizer, check_answer, extract_boxed, load_tokenizer
from zaya_jax.data.corpus import normalize_answer
from zaya_jax.data.sources import iter_jsonl
from zaya_jax.loading import load_model
from zaya_jax.sampling import (ByteChatTemplate, Delethink, PromptBuilder, RSAConfig, Sampling,
                               load_chat_template, majority_vote, markovian_rsa, reply_stop_tokens)

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "transformers-format checkpoint directory, or a zaya_jax "
                                  "training workdir (its newest checkpoint)")
_PROMPTS = flags.DEFINE_string("prompts", None, "input JSONL, one problem per line")
_OUTPUT = flags.DEFINE_string("output", None, "output JSONL, one result per problem")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "'byte', or a tokenizer.json path/directory "
                                 "(default: the checkpoint's own)")
_CHAT = flags.DEFINE_string("chat_template", "auto", "'auto' (the checkpoint's own, or the built-in byte "
                            "template for the byte tokenizer), 'builtin', or a directory with a "
                            "tokenizer_config.json")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "parameter and activation dtype")
_N = flags.DEFINE_integer("population", 16, "N: rollouts per round")
_C = flags.DEFINE_integer("candidates", 4, "C: candidate tails per aggregation prompt (1 = own-tail continuation)")
_T = flags.DEFINE_integer("rounds", 2, "T: aggregation rounds after round 0 (0 = parallel sampling)")
_BUDGET = flags.DEFINE_integer("budget", 1024, "beta: new tokens per rollout")
_FINAL_BUDGET = flags.DEFINE_integer("final_budget", None, "new tokens per rollout of round T (default: budget)")
_TAIL = flags.DEFINE_integer("tail", 256, "tau: tail tokens forwarded per candidate (>= budget: whole rollouts)")
_CHUNK = flags.DEFINE_integer("chunk_size", 0, "Delethink chunk size per rollout (0 = no chunking)")
_CARRY = flags.DEFINE_integer("carry", 0, "Delethink: tokens carried into the next chunk")
_KEEP_HEAD = flags.DEFINE_integer("keep_head", 0, "Delethink: first tokens of the rollout kept in every chunk")
_PREFILL_CHUNK = flags.DEFINE_integer("prefill_chunk", 512, "prefill prompts in chunks of this many tokens "
                                      "(bounds prefill memory of long aggregation prompts; 0 = one pass)")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "sampling temperature (0 = greedy)")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass (1 = off)")
_TOP_K = flags.DEFINE_integer("top_k", 0, "top-k sampling (0 = off)")
_MIN_P = flags.DEFINE_float("min_p", 0.0, "min-p sampling (0 = off)")
_STOP = flags.DEFINE_list("stop_tokens", None, "stop token ids (default: the config's eos ids, plus "
                          "<|end_of_turn|> with the byte tokenizer)")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed; problem k uses fold_in(key(seed), k)")
flags.mark_flags_as_required(["checkpoint", "prompts", "output"])


def _read_prompts(path: str) -> list[tuple[dict, str]]:
  """(record, question) per line of the prompts JSONL; a bad line is a UsageError naming its file and line."""
  prompts = []
  for where, _, record in iter_jsonl(path, app.UsageError):
    question = record.get("question", record.get("problem"))
    if not isinstance(question, str):
      raise app.UsageError(f"{where}: needs a 'question' or 'problem' string (got keys {sorted(record)})")
    prompts.append((record, question))
  if not prompts:
    raise app.UsageError(f"{path}: no prompts")
  return prompts


def _chat_template(tokenizer, loaded):
  spec = _CHAT.value
  if spec == "builtin" or (spec == "auto" and isinstance(tokenizer, ByteTokenizer)):
    return ByteChatTemplate()
  return loaded.chat_template if spec == "auto" else load_chat_template(spec)


def _stop_tokens(config, tokenizer):
  if _STOP.value is not None:
    return tuple(int(t) for t in _STOP.value)
  return reply_stop_tokens(config, tokenizer)


def _answer(text):
  boxed = extract_boxed(text)
  return None if boxed is None else normalize_answer(boxed)


def _round_record(r, tokenizer, record):
  candidates = []
  for b in range(len(r.prompts)):
    text = tokenizer.decode(r.rollouts.trace(b))
    candidate = {"text": text, "tokens": int(r.rollouts.lengths[b]), "stopped": bool(r.rollouts.stopped[b]),
                 "answer": _answer(text)}
    if r.candidates is not None:
      candidate["aggregated"] = r.candidates[b].tolist()
    if "answer" in record:
      candidate["correct"] = check_answer(record, text)
    candidates.append(candidate)
  return {"round": r.index, "generated_tokens": int(r.rollouts.lengths.sum()), "candidates": candidates}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  records = _read_prompts(_PROMPTS.value)  # every line checked before the model loads
  loaded = load_model(_CHECKPOINT.value, dtype=_DTYPE.value)
  config, params = loaded.config, loaded.params
  tokenizer = load_tokenizer(_TOKENIZER.value) if _TOKENIZER.value else loaded.tokenizer
  chat = _chat_template(tokenizer, loaded)
  stop = _stop_tokens(config, tokenizer)
  chunking = Delethink(_CHUNK.value, _CARRY.value, _KEEP_HEAD.value) if _CHUNK.value else None
  rsa = RSAConfig(population=_N.value, candidates=_C.value, rounds=_T.value, budget=_BUDGET.value,
                  tail=_TAIL.value, final_budget=_FINAL_BUDGET.value, chunking=chunking,
                  prefill_chunk=_PREFILL_CHUNK.value,
                  sampling=Sampling(temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                                    min_p=_MIN_P.value, vocab_limit=min(tokenizer.vocab_size, config.vocab_size)))
  with open(_OUTPUT.value, "w") as out:
    for k, (record, question) in enumerate(records):
      builder = PromptBuilder(tokenizer, chat, question)
      rounds, start = [], time.perf_counter()
      for r in markovian_rsa(params, config, builder, rsa, jax.random.fold_in(jax.random.key(_SEED.value), k),
                             stop_tokens=stop, pad_id=config.pad_token_id or 0):
        rounds.append(_round_record(r, tokenizer, record))
        answered = sum(c["answer"] is not None for c in rounds[-1]["candidates"])
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"problem {k + 1}/{len(records)} round {r.index}/{rsa.rounds}: "
              f"{time.perf_counter() - start:.1f}s, {rounds[-1]['generated_tokens']} tokens generated, "
              f"{answered}/{rsa.population} answered, peak RSS {rss_mib:.0f} MiB", flush=True)
      final = rounds[-1]["candidates"]
      result = {"id": record.get("id", k), "question": question, "rounds": rounds,
                "majority": majority_vote([c["answer"] for c in final]),
                "generated_tokens": sum(r["generated_tokens"] for r in rounds)}
      if "answer" in record:
        result["answer"] = record["answer"]
        result["avg_correct"] = sum(c["correct"] for c in final) / len(final)
        result["majority_correct"] = (result["majority"] is not None
                                      and result["majority"] == normalize_answer(record["answer"]))
      out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
  app.run(main)
