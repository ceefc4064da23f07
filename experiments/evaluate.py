"""Evaluates a checkpoint on a benchmark file under one of the ZAYA1 report's generation settings.

  python experiments/evaluate.py --benchmark=aime25 --data=aime25.jsonl --checkpoint=DIR --output=eval \
      --mode=rsa --preset=rsa_16k
  python experiments/evaluate.py --benchmark=toy --checkpoint=/tmp/post/sft --output=eval_toy --mode=single

--benchmark names a benchmark (`zaya_jax.evaluation.BENCHMARKS`: aime25, aime26, hmmt_feb25, hmmt_feb26,
apex_shortlist, imo_answerbench, lcb_v6, gpqa_diamond; math, multiple_choice or code for other files; toy for
the built-in held-out problems, which need no --data). --data is a JSONL file in the benchmark family's schema
(`zaya_jax/evaluation/benchmarks.py`). --preset names a generation setting (`zaya_jax/evaluation/presets.py`);
without it --mode picks the benchmark's single-rollout preset or the deployment-default Markovian RSA
(rsa_16k). Flags such as --samples or --budget override the preset; an overridden preset is reported as
`<name>_custom` and is not compared with published numbers.

Writes `OUTPUT/<benchmark>__<preset>/results.jsonl` (per problem: every round's extracted answers,
correctness and token counts; the final round's texts) and `summary.json`, then rebuilds `OUTPUT/report.md`
(and `OUTPUT/accuracy_vs_tokens.png` when a Markovian RSA run is present) from every run in OUTPUT, so runs
of several benchmarks and presets into one directory make one table. Token counts follow the ZAYA1
accounting: generated tokens only, all rollouts of all rounds.
"""

import dataclasses

from absl import app, flags

from zaya_jax.evaluation import (BENCHMARKS, PRESETS, PlainTemplate, evaluate, get_benchmark, get_preset,
                                 load_problems, markdown_table, run_summary, summarize, toy_problems, write_report,
                                 write_run)
from zaya_jax.loading import load_model
from zaya_jax.sampling import Delethink

_BENCHMARK = flags.DEFINE_enum("benchmark", None, sorted(BENCHMARKS), "benchmark name")
_DATA = flags.DEFINE_string("data", None, "benchmark JSONL file (not needed for --benchmark=toy)")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "transformers-format checkpoint directory, or a zaya_jax "
                                  "training workdir (its newest checkpoint)")
_OUTPUT = flags.DEFINE_string("output", None, "output directory (one sub-directory per run, plus the report)")
_MODE = flags.DEFINE_enum("mode", "single", ["single", "rsa"], "single rollout or Markovian RSA (when no --preset)")
_PRESET = flags.DEFINE_enum("preset", None, sorted(PRESETS), "generation setting (default: from --mode)")
_SAMPLES = flags.DEFINE_integer("samples", None, "samples scored per problem: k (single) or population N (rsa)")
_C = flags.DEFINE_integer("candidates", None, "C: candidate tails per aggregation prompt")
_T = flags.DEFINE_integer("rounds", None, "T: aggregation rounds after round 0")
_BUDGET = flags.DEFINE_integer("budget", None, "new tokens per rollout (beta for rsa)")
_FINAL_BUDGET = flags.DEFINE_integer("final_budget", None, "new tokens per rollout of the final RSA round "
                                     "(0 = the same as --budget)")
_TAIL = flags.DEFINE_integer("tail", None, "tau: tail tokens forwarded per candidate")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "sampling temperature (0 = greedy)")
_TOP_P = flags.DEFINE_float("top_p", None, "nucleus sampling mass (1 = off)")
_TOP_K = flags.DEFINE_integer("top_k", None, "top-k sampling (0 = off)")
_MIN_P = flags.DEFINE_float("min_p", None, "min-p sampling (0 = off)")
_CHUNK = flags.DEFINE_integer("chunk_size", 0, "Delethink chunk size per rollout (0 = no chunking)")
_CARRY = flags.DEFINE_integer("carry", 0, "Delethink: tokens carried into the next chunk")
_KEEP_HEAD = flags.DEFINE_integer("keep_head", 0, "Delethink: first tokens of the rollout kept in every chunk")
_PREFILL_CHUNK = flags.DEFINE_integer("prefill_chunk", 512, "prefill prompts in chunks of this many tokens "
                                      "(bounds prefill memory of long aggregation prompts; 0 = one pass)")
_BATCH = flags.DEFINE_integer("problems_per_batch", 1, "problems sampled together (rows = problems x samples)")
_LIMIT = flags.DEFINE_integer("limit", 0, "evaluate only the first LIMIT problems (0 = all)")
_PROMPT = flags.DEFINE_enum("prompt_format", "chat", ["chat", "plain"], "'chat': the checkpoint's chat template; "
                            "'plain': 'Problem: ...\\nSolution:', the corpus format of pretrained-only toy models")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "parameter and activation dtype")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed; problem i samples with fold_in(key(seed), i)")
_K = flags.DEFINE_list("k", ["1"], "k values of pass@k and maj@k (those <= samples; maj@samples is always "
                      "reported)")
_RESAMPLES = flags.DEFINE_integer("bootstrap", 1000, "bootstrap resamples for the 95% intervals")
_KEEP_TEXTS = flags.DEFINE_bool("keep_texts", True, "store the final round's texts in results.jsonl")
_TOY_FAMILIES = flags.DEFINE_list("toy_families", ["arithmetic", "linear", "modular", "word"], "toy: families")
_TOY_DIFFICULTIES = flags.DEFINE_list("toy_difficulties", ["1", "2"], "toy: difficulties")
_TOY_COUNT = flags.DEFINE_integer("toy_count", 5, "toy: held-out problems per family and difficulty")
flags.mark_flags_as_required(["benchmark", "checkpoint", "output"])


def _preset(spec):
  preset = get_preset(_PRESET.value or (spec.single_preset if _MODE.value == "single" else spec.rsa_preset))
  overrides = {name: flag.value for name, flag in (("samples", _SAMPLES), ("candidates", _C), ("rounds", _T),
                                                   ("budget", _BUDGET), ("final_budget", _FINAL_BUDGET),
                                                   ("tail", _TAIL)) if flag.value is not None}
  sampling = {name: flag.value for name, flag in (("temperature", _TEMPERATURE), ("top_p", _TOP_P),
                                                  ("top_k", _TOP_K), ("min_p", _MIN_P)) if flag.value is not None}
  if overrides.get("final_budget") == 0:
    overrides["final_budget"] = None
  custom = dataclasses.replace(preset, sampling=dataclasses.replace(preset.sampling, **sampling), **overrides)
  return custom if custom == preset else dataclasses.replace(custom, name=f"{preset.name}_custom")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  spec = get_benchmark(_BENCHMARK.value)
  preset = _preset(spec)
  if spec.name == "toy":
    problems = toy_problems(families=_TOY_FAMILIES.value, difficulties=[int(d) for d in _TOY_DIFFICULTIES.value],
                            count=_TOY_COUNT.value, seed=_SEED.value)
  elif _DATA.value is None:
    raise app.UsageError(f"--benchmark={spec.name} needs --data=FILE.jsonl")
  else:
    problems = load_problems(_DATA.value, spec.kind)
  problems = problems[:_LIMIT.value or None]
  model = load_model(_CHECKPOINT.value, dtype=_DTYPE.value)
  chunking = Delethink(_CHUNK.value, _CARRY.value, _KEEP_HEAD.value) if _CHUNK.value else None
  print(f"{spec.title}: {len(problems)} problems, preset {preset.name} ({preset.describe()})", flush=True)
  records = evaluate(model, spec.kind, problems, preset, seed=_SEED.value, problems_per_batch=_BATCH.value,
                     template=PlainTemplate() if _PROMPT.value == "plain" else None,
                     truncate_at=PlainTemplate.STOP_TEXT if _PROMPT.value == "plain" else None,
                     rsa_fields={"chunking": chunking, "prefill_chunk": _PREFILL_CHUNK.value},
                     keep_texts=_KEEP_TEXTS.value, progress=lambda line: print(line, flush=True))
  summary = run_summary(spec, preset, summarize(records, ks=[int(k) for k in _K.value],
                                                resamples=_RESAMPLES.value, seed=_SEED.value),
                        checkpoint=_CHECKPOINT.value, step=model.step, seed=_SEED.value,
                        prompt_format=_PROMPT.value)
  run_dir = write_run(_OUTPUT.value, records, summary)
  report, plot = write_report(_OUTPUT.value)
  print(markdown_table([summary]), end="")
  print(f"wrote {run_dir}/results.jsonl and summary.json; report {report}" + (f", plot {plot}" if plot else ""))


if __name__ == "__main__":
  app.run(main)
