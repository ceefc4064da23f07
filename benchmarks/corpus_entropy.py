"""Unigram entropy of the built-in pretraining corpus under the byte tokenizer (the loss a model that ignores
context would reach), to read the tiny job's losses against.

  python benchmarks/corpus_entropy.py [--documents 3000]
"""

import argparse
import collections

import numpy as np

from zaya_jax import data


def unigram_entropy(documents, tokenizer) -> float:
  """Entropy in nats per token of the token frequencies of [bos] + text + [eos] documents."""
  counts = collections.Counter()
  for text in documents:
    counts.update([tokenizer.bos_id, *tokenizer.encode(text), tokenizer.eos_id])
  p = np.array(list(counts.values()), np.float64)
  p /= p.sum()
  return float(-(p * np.log(p)).sum())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--documents", type=int, default=3000, help="documents per source")
  args = parser.parse_args()
  cfg = data.default_pretrain_config()
  tokenizer = data.load_tokenizer("byte")
  print("| source | documents | unigram entropy (nats/token) |")
  print("|---|---:|---:|")
  for name in ("general", "math", "long_reasoning"):
    source = data.make_source(cfg.sources[name].to_dict(), name)
    docs = [source[i] for i in range(min(args.documents, len(source)))]
    print(f"| {name} | {len(docs)} | {unigram_entropy(docs, tokenizer):.2f} |")


if __name__ == "__main__":
  main()
