"""Solutions the trained model writes for held-out problems of the built-in corpus (printed after pretraining)."""

from __future__ import annotations

import ml_collections
import numpy as np

from zaya_jax import data
from zaya_jax.config import ZayaConfig
from zaya_jax.sampling import Sampling, generate


def solve_heldout(params, model_config: ZayaConfig, data_cfg: ml_collections.ConfigDict, *, count: int = 2,
                  families=("arithmetic", "linear"), difficulty: int = 1, max_new_tokens: int = 160,
                  seed: int = 0) -> list[dict]:
  """Greedy solutions to `count` held-out problems, prompted the way pretraining documents begin.

  Returns [{"problem", "reference", "generated", "answer" (the last \\boxed{} or None), "correct"}].
  """
  tokenizer = data.load_tokenizer(data_cfg.tokenizer)
  records = [data.make_record(families[i % len(families)], difficulty, seed, i, split="heldout")
             for i in range(count)]
  prompts = [[tokenizer.bos_id, *tokenizer.encode(f"Problem: {r['problem']}\nSolution:")] for r in records]
  width = max(map(len, prompts))
  ids = np.full((count, width), tokenizer.pad_id, np.int32)
  mask = np.zeros((count, width), np.int32)
  for i, p in enumerate(prompts):  # left padding
    ids[i, width - len(p):] = p
    mask[i, width - len(p):] = 1
  out = generate(params, model_config, ids, prompt_mask=mask, max_new_tokens=max_new_tokens,
                 sampling=Sampling(temperature=0.0, vocab_limit=tokenizer.vocab_size),  # greedy
                 stop_tokens=[tokenizer.eos_id], pad_id=tokenizer.pad_id)
  results = []
  for record, tokens, length in zip(records, np.asarray(out.tokens), np.asarray(out.lengths)):
    text = tokenizer.decode(tokens[:length].tolist())
    results.append({"problem": record["problem"], "reference": record["answer"], "generated": text,
                    "answer": data.extract_boxed(text), "correct": data.check_answer(record, text)})
  return results


def format_solutions(results: list[dict]) -> str:
  """Human-readable block: problem, the model's text, its boxed answer against the reference."""
  lines = []
  for r in results:
    lines += [f"Problem: {r['problem']}", f"Model:   {r['generated'].strip()}",
              f"Answer:  {r['answer']} (reference {r['reference']}: {'correct' if r['correct'] else 'wrong'})", ""]
  return "\n".join(lines)
