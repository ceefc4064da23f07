"""The RL stages of post-training (RSA_AND_POSTTRAINING.md §5.4): `run(config, workdir, init) -> params`.

One step:
  1. prompts: `train.prompts_per_step` tasks (zaya_jax/posttrain/rl_tasks.py); with `rl.aggregation_fraction`
     f > 0, round(f·P) of them are Markovian RSA aggregation prompts built from this step's own rollouts of
     other prompts (question + the last τ tokens of C distinct rollouts of one of them);
  2. rollouts: G per prompt from the jitted sampler (`zaya_jax.sampling.rsa.rollout`), prompts left-padded to a
     fixed width (`train.prompt_width`; aggregation prompts to their own fixed width), so every step reuses the
     same compiled programs;
  3. rewards from the verifiers; a degenerate rollout (the zlib canary of zaya_jax/rewards/behavior.py) scores 0;
  4. advantages (zaya_jax/posttrain/objectives.py: MaxRL / GRPO / GRPO-std, the length reward, dynamic sampling;
     optionally DAPO's overlong filtering: rollouts cut at the budget get no gradient);
  5. old log-probs: a forward pass of the pre-update params over prompt + response (the rollout policy's
     token distribution: logits / temperature; sampling uses no top-k/top-p/min-p so the two agree);
  6. `rl.minibatches` optimiser steps, each on 1/M of every prompt group set: the Dr-GRPO loss with the DPPO
     Binary-TV mask, no KL. Gradients of the different prompt widths are summed, then one update is applied
     (Muon/AdamW of zaya_jax/train/optimizer.py). With M = 1 the update is on-policy (ρ = 1, nothing masked); later
     minibatches of a step are off-policy by the earlier updates, which the trust region bounds.

Router balancing: the biases are updated from the training forward's router counts as in pretraining when
`balancing.rate` > 0; the stage configs freeze them (rate 0), so routes change between the rollout and the
update only through the learned weights. Those changes, and the numerics of decoding against a full forward,
can still send a token to another expert in the training forward than in its rollout, which makes the
importance ratios noisy. `rl.router_replay` records every (token, layer)'s route while sampling
(`generate(..., record_routing=True)`) and forces it in the old-log-prob and the training forwards
(`forward(..., expert_choices=...)`): the combine weight is then the current router's probability of the
recorded route, so the router still learns, and the balancing biases play no part in those forwards (their
counts are of the replayed routes). Routes are not recorded under Delethink chunking (`rsa.rollout` refuses);
the RL stages do not chunk.

Determinism and resume: every random choice of step s derives from (train.seed, s): prompt draws, candidate
tails, sampling keys. The checkpoint holds the TrainState (params, optimiser, balancing, step) and, as JSON, the
environment curriculum and the best solve rate per source, so a resumed stage repeats the metrics of an
uninterrupted one exactly. SIGTERM finishes the current step, saves and returns.

Outputs in `workdir`: config.json, checkpoints/<step>/{state, data} (data: the JSON state above),
metrics.jsonl (one record per step, zaya_jax/posttrain/rl_report.py, plus held-out evaluations), tensorboard/,
rl.png, and (from zaya_jax/posttrain/stages.py) heldout_init.json and summary.json.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from zaya_jax.api import forward, positions_from_mask
from zaya_jax.config import ZayaConfig
from zaya_jax.data.tokenizer import Tokenizer
from zaya_jax.posttrain import heldout, objectives, rl_report, rl_tasks, stages
from zaya_jax.rewards.behavior import degenerate
from zaya_jax.sampling.chat import ChatTemplate, reply_stop_tokens
from zaya_jax.sampling.generation import Sampling
from zaya_jax.sampling.rsa import Rollouts, left_pad, rollout
from zaya_jax.train import balancing as bal
from zaya_jax.train import reporting
from zaya_jax.train.checkpointing import Checkpointer
from zaya_jax.train.optimizer import make_optimizer, make_schedule
from zaya_jax.train.steps import TrainState, apply_gradients
from zaya_jax.train.trainer import _StopOnSigterm, write_config


class RLConfigError(ValueError):
  """An RL stage config that cannot run."""


def base_config() -> ml_collections.ConfigDict:
  """The fields every RL stage config sets (configs/posttrain/rl_*.py override them); no `model` group: it comes
  from the init checkpoint."""
  config = ml_collections.ConfigDict()
  config.stage = "rl"
  config.optim = ml_collections.ConfigDict(dict(
      name="muon",  # Muon on hidden matrices + AdamW elsewhere (zaya_jax/train/optimizer.py)
      lr=1e-4,  # peak learning rate
      schedule="constant",  # after warmup
      warmup_steps=0,  # linear warmup from 0
      decay_fraction=0.2,  # unused by "constant"
      min_lr_ratio=1.0,  # unused by "constant"
      b1=0.9,  # AdamW first-moment decay
      b2=0.95,  # AdamW second-moment decay
      eps=1e-8,  # AdamW epsilon
      weight_decay=0.0,  # no decay: RL moves the weights little and should not shrink them
      clip_norm=1.0,  # global gradient-norm clipping threshold
      muon_momentum=0.0,  # momentum-free Muon, as the report's RL
      muon_nesterov=False,  # (no momentum to look ahead with)
      muon_ns_steps=5,  # Newton-Schulz iterations per orthogonalisation
      muon_rms=0.2,  # RMS of a Muon update after AdamW-RMS matching
  ))
  config.balancing = ml_collections.ConfigDict(dict(
      rate=0.0,  # router biases frozen during RL (module docstring); > 0 updates them as in pretraining
      b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, skip_mode="experts",
  ))
  config.train = ml_collections.ConfigDict(dict(
      steps=100,  # RL steps (each: rollouts, then `rl.minibatches` optimiser updates)
      prompts_per_step=8,  # P, aggregation prompts included
      rollouts_per_prompt=8,  # G
      max_new_tokens=128,  # response budget per rollout
      prompt_width=96,  # every plain prompt is left-padded to this many tokens (longer ones are an error)
      temperature=1.0,  # sampling temperature (no top-k / top-p / min-p)
      seed=0,  # prompt draws, candidate tails and sampling keys of every step
      log_every=1,  # steps between progress lines
      eval_every=0,  # steps between held-out evaluations during the stage (0: only summary.json's at the end)
      checkpoint_every=25,  # steps between checkpoints (a final one is always written)
      keep_checkpoints=2,  # how many recent checkpoints to keep
  ))
  config.rl = ml_collections.ConfigDict(dict(
      advantage="maxrl",  # "maxrl" (r - mean)/mean, "grpo" r - mean, "grpo_std" (r - mean)/std, "reinforce" r - b
      baseline=0.0,  # b of "reinforce" (objectives.advantages; 1/(1 + λ) is W-REINFORCE)
      negative_weight=1.0,  # scale of the negative advantages, in [0, 1] (objectives.weigh_negatives)
      trust_region_delta=0.1,  # δ of the DPPO Binary-TV mask
      ratio_cap=20.0,  # cap on the importance ratio's gradient weight
      minibatches=1,  # optimiser updates per step (1 = on-policy)
      # Most rollouts in one forward/backward pass: a larger minibatch is split into passes whose gradients are
      # summed before its one update (the same update in bounded memory: a warm-up step of the tiny model on CPU
      # with up to 256 rollouts of 352 tokens in one pass peaked at 16 GB of RAM, in passes of 64 at 5.4 GB).
      rollouts_per_pass=64,
      dynamic_sampling=True,  # drop groups whose rewards are all equal
      min_correct=0,  # also drop groups with fewer correct rollouts (objectives.enough_successes); 0 = off
      mask_truncated=False,  # DAPO's overlong filtering: rollouts cut at max_new_tokens get no gradient
      length_reward=dict(coef=0.0, max_len=128, len_tol=8, acc_tol=0.1),  # objectives.LengthReward
      aggregation_fraction=0.0,  # fraction of the prompts that are Markovian RSA aggregation prompts
      aggregation_candidates=2,  # C tails per aggregation prompt (<= G)
      aggregation_tail=32,  # τ tokens per tail
      degeneracy_canary=True,  # zero the reward of degenerate rollouts (rewards/behavior.py `degenerate`)
      # Router replay: force the rollout's expert choices in the old-log-prob and training forwards, so an
      # expert switch between sampling and update cannot move the importance ratio (module docstring).
      router_replay=False,
  ))
  config.rewards = rl_tasks.default_rewards_config()
  return config


# ---------------------------------------------------------------------------------------------------------
# Jitted programs: old log-probs, gradients per prompt width, one optimiser update.


def _response_logprobs(params, model_config, tokens, mask, prompt_width, temperature, vocab_limit,
                       expert_choices=None):
  """log π of the response tokens [B, T] and the router counts of the real tokens [L, E+1]; expert_choices
  [B, W+T, L] (router replay) forces the routes.

  The padding is given as segment ids (real tokens 1, padding 0) rather than as an attention mask: the two
  give the real tokens the same logits, but the attention-mask path gives the left padding's queries no key to
  attend to, and the gradient of those all-masked softmax rows is NaN.
  """
  logits, aux = forward(params, model_config, tokens, segment_ids=mask, positions=positions_from_mask(mask),
                        expert_choices=expert_choices, return_aux=True)
  logp = objectives.response_logprobs(logits, tokens, prompt_width, temperature, vocab_limit)
  return logp, bal.expert_counts(aux["expert_index"], mask, model_config.num_experts)


@functools.lru_cache(maxsize=4)
def _programs(model_config: ZayaConfig, optim_json: str, balancing_json: str, total_steps: int,
              temperature: float, vocab_limit: int, delta: float, ratio_cap: float):
  """(optimizer, logprobs(params, tokens, mask, prompt_width, expert_choices=None), grads(params, batch,
  prompt_width, n), apply(state, grads, counts)); cached so that a resumed run in the same process does not
  recompile. A batch with "expert_choices" (router replay) replays them."""
  optim = ml_collections.ConfigDict(json.loads(optim_json))
  balancing = ml_collections.ConfigDict(json.loads(balancing_json))
  optimizer = make_optimizer(optim, total_steps)

  def logprobs(params, tokens, mask, prompt_width, expert_choices=None):
    return _response_logprobs(params, model_config, tokens, mask, prompt_width, temperature, vocab_limit,
                              expert_choices)[0]

  def loss_fn(params, batch, prompt_width, num_rollouts):
    logp, counts = _response_logprobs(params, model_config, batch["tokens"], batch["mask"], prompt_width,
                                      temperature, vocab_limit, batch.get("expert_choices"))
    token_mask = objectives.response_mask(batch["lengths"], logp.shape[1])
    loss, stats = objectives.policy_loss(logp, batch["old_logp"], batch["advantages"], token_mask,
                                         batch["weights"], num_rollouts, delta=delta, ratio_cap=ratio_cap)
    return loss, (stats, counts)

  def grads(params, batch, prompt_width, num_rollouts):
    (loss, (stats, counts)), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, prompt_width,
                                                                           num_rollouts)
    return g, {"loss": loss, "stats": stats, "counts": counts}

  def apply(state: TrainState, g, counts):
    return apply_gradients(state, g, counts, optimizer, balancing), optax.global_norm(g)

  return (optimizer, jax.jit(logprobs, static_argnums=3), jax.jit(grads, static_argnums=2),
          jax.jit(apply, donate_argnums=0))


# ---------------------------------------------------------------------------------------------------------
# Rollouts, rewards and advantages of one step.


class GroupSet:
  """P' prompts of one width with G rollouts each (host arrays): tokens [P'G, W+T] (prompt | response), mask
  (1 = real token), lengths [P'G]; after `score`, rewards / correct / degenerate [P', G]."""

  def __init__(self, tasks: list[rl_tasks.Task], width: int, group_size: int, result: Rollouts,
               prompt_ids: np.ndarray, prompt_mask: np.ndarray):
    self.tasks, self.width, self.group_size, self.rollouts = tasks, width, group_size, result
    T = result.tokens.shape[1]
    response = (np.arange(T)[None] < result.lengths[:, None]).astype(np.int32)
    self.tokens = np.concatenate([prompt_ids, result.tokens.astype(np.int32)], axis=1)
    self.mask = np.concatenate([prompt_mask, response], axis=1)
    self.lengths = result.lengths.astype(np.int32)

  def score(self, tokenizer: Tokenizer, canary) -> None:
    """Rewards from each task's verifier; a rollout the canary flags scores 0 (`canary` None: no canary)."""
    P, G = len(self.tasks), self.group_size
    self.rewards, self.correct = np.zeros((P, G), np.float32), np.zeros((P, G), bool)
    self.degenerate = np.zeros((P, G), bool)
    for p, task in enumerate(self.tasks):
      for g in range(G):
        ids = self.rollouts.trace(p * G + g)
        if canary is not None and canary(ids):
          self.degenerate[p, g] = True
          continue
        self.rewards[p, g], self.correct[p, g] = task.score(tokenizer.decode(ids), len(ids))


def _sample(params, model_config, tasks, width, G, T, key, sampling, stop, pad_id,
            record_routing=False) -> GroupSet:
  prompts = [list(task.ids) for task in tasks for _ in range(G)]
  ids, mask = left_pad(prompts, width, pad_id)
  result = rollout(params, model_config, prompts, budget=T, key=key, sampling=sampling, width=width,
                   stop_tokens=stop, pad_id=pad_id, record_routing=record_routing)
  return GroupSet(list(tasks), width, G, result, ids, mask)


def _rollout_setup(config: ml_collections.ConfigDict, model_config: ZayaConfig, tokenizer: Tokenizer,
                   chat_template: ChatTemplate):
  """(task sampler, Sampling, stop tokens, degeneracy canary or None) of a stage: built in one place for the
  loop and `replay`, so that a replay draws and scores exactly what the loop did."""
  tc = config.train
  sampler = rl_tasks.TaskSampler(config.rewards, tokenizer, chat_template, prompt_width=tc.prompt_width,
                                 group_size=tc.rollouts_per_prompt)
  sampling = Sampling(temperature=tc.temperature, vocab_limit=min(tokenizer.vocab_size, model_config.vocab_size))
  canary = degenerate if config.rl.degeneracy_canary else None
  return sampler, sampling, reply_stop_tokens(model_config, tokenizer), canary


def _plain_rollouts(params, model_config, sampler: rl_tasks.TaskSampler, step: int, n_plain: int,
                    tc: ml_collections.ConfigDict, sampling, stop, pad_id, record_routing=False):
  """Step `step`'s plain group set -> (set, the step's numpy Generator, the step's key). Its prompts and
  sampling key derive from (train.seed, step) only (and the curriculum, when the stage has one), so `replay`
  redraws them exactly; the Generator and key go on to the step's other draws."""
  rng = np.random.default_rng([tc.seed, step])
  key = jax.random.fold_in(jax.random.key(tc.seed), step)
  plain = _sample(params, model_config, sampler.sample(step, n_plain, rng), tc.prompt_width,
                  tc.rollouts_per_prompt, tc.max_new_tokens, jax.random.fold_in(key, 0), sampling, stop, pad_id,
                  record_routing)
  return plain, rng, key


def _aggregation_sources(plain: GroupSet, count: int, candidates: int, tail: int, rng: np.random.Generator):
  """`count` distinct aggregatable plain prompts and, for each, the tails of C distinct rollouts of it."""
  eligible = [p for p, task in enumerate(plain.tasks) if task.question is not None]
  if len(eligible) < count:
    raise RLConfigError(f"{count} aggregation prompts need as many plain prompts with a question; "
                        f"this step has {len(eligible)}")
  chosen = rng.choice(eligible, size=count, replace=False)
  G = plain.group_size
  tails = [[plain.rollouts.tail(p * G + int(g), tail) for g in rng.choice(G, size=candidates, replace=False)]
           for p in chosen]
  return [plain.tasks[p] for p in chosen], tails


def _training_batch(s: GroupSet, rc: ml_collections.ConfigDict, length_cfg: objectives.LengthReward,
                    best: dict[str, float]) -> dict[str, np.ndarray]:
  """Advantages [P'G] and rollout weights [P'G] of one group set, with its tokens, mask and lengths; sets
  s.kept [P']. A rollout weighs 0 when dynamic sampling or `rl.min_correct` drops its group, and with
  `rl.mask_truncated` when it hit the token budget without a stop token (its reward still counts in the group's
  mean)."""
  G = s.group_size
  rate = np.asarray([best.get(task.source, 0.0) for task in s.tasks], np.float32)
  bonus = objectives.length_bonus(s.correct, s.lengths.reshape(-1, G), rate, length_cfg)
  adv = objectives.advantages(s.rewards, rc.advantage, bonus, baseline=rc.baseline)
  adv = np.asarray(objectives.weigh_negatives(adv, rc.negative_weight), np.float32)
  varied = objectives.has_variance(s.rewards) if rc.dynamic_sampling else True
  s.kept = np.asarray(varied & objectives.enough_successes(s.correct, rc.min_correct))
  batch = {"tokens": s.tokens, "mask": s.mask, "lengths": s.lengths, "advantages": adv.reshape(-1),
           "weights": (np.repeat(s.kept, G) & (s.rollouts.stopped | (not rc.mask_truncated))).astype(np.float32)}
  if s.rollouts.expert_choices is not None:  # router replay: the routes of prompt | response [P'G, W+T, L]
    batch["expert_choices"] = s.rollouts.expert_choices
  return batch


def minibatch_groups(kept_P, M: int) -> list[np.ndarray]:
  """The group indices each of the M minibatches trains on: the m-th 1/M of the groups in kept-first order,
  cut after its kept groups to the next power of two (at most its share). Dropped groups weigh 0, so the cut
  leaves the update unchanged and spares their forward and backward passes (at a ~20% solve rate most groups
  are dropped), while the power-of-two sizes bound the compiled programs to log2(P/M) + 1 per prompt width."""
  kept = np.asarray(kept_P, bool)
  order = np.argsort(~kept, kind="stable")
  P = len(kept)
  out = []
  for m in range(M):
    share = order[m * P // M:(m + 1) * P // M]
    k = int(kept[share].sum())
    out.append(share[:min(len(share), 1 << max(k - 1, 0).bit_length())] if k else share[:0])
  return out


def _policy_updates(state: TrainState, sets: list[GroupSet], batches: list[dict], M: int, rollouts_per_pass: int,
                    logprobs_fn, grads_fn, apply_fn) -> tuple[TrainState, dict]:
  """The optimiser updates of one step -> (state, totals: loss, LossStats sums, grad_norm, updates, counts).

  Minibatch m holds the m-th 1/M of every group set's groups, kept groups first, cut to `minibatch_groups`
  (a minibatch of dropped groups only is skipped: no forward, no update), in passes of at most
  `rollouts_per_pass` rollouts. Old log-probs come from the params before the first update. Gradients of the
  passes (one compiled program per prompt width and row count) are summed with a shared Dr-GRPO divisor, the
  number of counted rollouts of the minibatch, then applied once.
  """
  parts = [[] for _ in range(M)]  # parts[m]: (group set, its rows of minibatch m) for the sets with rows in it
  for s, batch in zip(sets, batches):
    for m, groups in enumerate(minibatch_groups(s.kept, M)):
      rows = (groups[:, None] * s.group_size + np.arange(s.group_size)).reshape(-1)
      for start in range(0, len(rows), rollouts_per_pass):
        chunk = rows[start:start + rollouts_per_pass]
        parts[m].append((s, {k: jnp.asarray(v[chunk]) for k, v in batch.items()}))
  live = [m for m in range(M) if sum(float(part["weights"].sum()) for _, part in parts[m]) > 0]
  for m in live:
    for s, part in parts[m]:
      part["old_logp"] = logprobs_fn(state.params, part["tokens"], part["mask"], s.width,
                                     part.get("expert_choices"))
  totals = {"loss": 0.0, "tokens": 0.0, "masked": 0.0, "ratio_sum": 0.0, "grad_norm": 0.0, "updates": 0,
            "counts": None}
  for m in live:
    num_rollouts = jnp.float32(sum(float(part["weights"].sum()) for _, part in parts[m]))
    grads, counts = None, 0.0
    for s, part in parts[m]:
      g, out = grads_fn(state.params, part, s.width, num_rollouts)
      grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
      counts = counts + out["counts"]
      out = jax.device_get(out)
      totals["loss"] += float(out["loss"])
      for name in ("tokens", "masked", "ratio_sum"):
        totals[name] += float(getattr(out["stats"], name))
    state, norm = apply_fn(state, grads, counts)
    counts = np.asarray(counts)
    totals["counts"] = counts if totals["counts"] is None else totals["counts"] + counts
    totals["grad_norm"], totals["updates"] = float(norm), totals["updates"] + 1
  return state, totals


def _update_count(opt_state) -> int:
  """Optimiser updates applied so far (the step the learning-rate schedule is at)."""
  return max(int(c) for _, c in optax.tree_utils.tree_get_all_with_path(opt_state, "count"))


# ---------------------------------------------------------------------------------------------------------
# The loop.


def _check(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """Validates the stage config -> (plain prompts, aggregation prompts) per step."""
  tc, rc = config.train, config.rl
  P, G, M = tc.prompts_per_step, tc.rollouts_per_prompt, rc.minibatches
  if P < 1 or G < 2:
    raise RLConfigError(f"need train.prompts_per_step >= 1 and train.rollouts_per_prompt >= 2, got {P}, {G}")
  if rc.advantage not in objectives.ADVANTAGES:
    raise RLConfigError(f"rl.advantage must be one of {objectives.ADVANTAGES}, got {rc.advantage!r}")
  if not 0.0 <= rc.negative_weight <= 1.0:
    raise RLConfigError(f"rl.negative_weight must lie in [0, 1], got {rc.negative_weight}")
  if not 0 <= rc.min_correct <= G:
    raise RLConfigError(f"rl.min_correct must lie in [0, G={G}], got {rc.min_correct}")
  if not 0.0 <= rc.aggregation_fraction < 1.0:
    raise RLConfigError(f"rl.aggregation_fraction must lie in [0, 1), got {rc.aggregation_fraction}")
  n_agg = int(round(rc.aggregation_fraction * P))
  n_plain = P - n_agg
  if n_agg > n_plain:
    raise RLConfigError(f"{n_agg} aggregation prompts need as many plain prompts to draw tails from; "
                        f"train.prompts_per_step={P} has {n_plain}")
  if n_agg and not 1 <= rc.aggregation_candidates <= G:
    raise RLConfigError(f"rl.aggregation_candidates must lie in [1, G={G}], got {rc.aggregation_candidates}")
  if rc.rollouts_per_pass < 1:
    raise RLConfigError(f"rl.rollouts_per_pass must be >= 1, got {rc.rollouts_per_pass}")
  if M < 1 or n_plain % M or n_agg % M:
    raise RLConfigError(f"rl.minibatches={M} must divide the plain ({n_plain}) and aggregation ({n_agg}) "
                        f"prompts of a step")
  return n_plain, n_agg


def _initial_state(params, optimizer, model_config: ZayaConfig, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    balancing=bal.init_balancing(model_config.num_hidden_layers, model_config.num_experts),
                    rng=jax.random.PRNGKey(seed))


class _ExtraState:
  """The JSON part of an RL checkpoint (curriculum, best solve rates). It travels through the trainer's
  Checkpointer in the slot of the grain iterator, whose checkpoint handler stores `get_state()` bytes and
  hands them back to `set_state`."""

  def __init__(self, value: dict):
    self.value = json.loads(json.dumps(value))  # a snapshot: saves are asynchronous, the loop's dicts move on

  def get_state(self) -> bytes:
    return json.dumps(self.value, sort_keys=True).encode()

  def set_state(self, state: bytes) -> None:
    self.value = json.loads(state.decode())

  def start_prefetch(self) -> None:
    """Nothing to prefetch (the handler calls this after a restore)."""


def train_rl(config: ml_collections.ConfigDict, workdir: str, init_params, tokenizer: Tokenizer,
             chat_template: ChatTemplate, *, stop_at: int | None = None) -> TrainState:
  """Runs (or resumes) the RL stage until config.train.steps (or `stop_at`); returns the state.

  config: a stage config with its `model` group filled (stages.with_checkpoint_model); init_params: the
  params to start from when the workdir has no checkpoint.
  """
  tc, rc = config.train, config.rl
  n_plain, n_agg = _check(config)
  model_config = ZayaConfig.from_dict(config.model.to_dict())
  write_config(config, workdir)
  M = rc.minibatches
  sampler, sampling, stop, canary = _rollout_setup(config, model_config, tokenizer, chat_template)
  # Old and new log-probs use the sampler's distribution: its temperature and vocabulary limit.
  optimizer, logprobs_fn, grads_fn, apply_fn = _programs(
      model_config, json.dumps(config.optim.to_dict(), sort_keys=True),
      json.dumps(config.balancing.to_dict(), sort_keys=True), tc.steps * M, float(tc.temperature),
      sampling.vocab_limit, float(rc.trust_region_delta), float(rc.ratio_cap))
  schedule = make_schedule(config.optim, tc.steps * M)
  G, T = tc.rollouts_per_prompt, tc.max_new_tokens
  length_cfg = objectives.LengthReward(**rc.length_reward.to_dict())
  agg_width = rl_tasks.aggregation_width(tokenizer, chat_template, tc.prompt_width, rc.aggregation_candidates,
                                         rc.aggregation_tail) if n_agg else 0

  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), tc.keep_checkpoints)
  abstract = jax.eval_shape(lambda p: _initial_state(p, optimizer, model_config, tc.seed), init_params)
  extra = _ExtraState({"curriculum": sampler.curriculum_state(), "best_solve_rate": {}})
  restored = checkpointer.restore_latest(abstract, lambda step: extra)
  if restored is None:
    # A copy: the update donates the state's buffers, and the caller's init_params must stay valid.
    state = _initial_state(jax.tree.map(jnp.array, init_params), optimizer, model_config, tc.seed)
  else:
    state, extra = restored
    sampler.load_curriculum_state(extra.value["curriculum"])
  # Placed the same way whether fresh or restored (committed to one device), so both reuse the compiled programs.
  state = jax.device_put(state, jax.devices()[0])
  best = dict(extra.value["best_solve_rate"])
  start = int(state.step)
  end = tc.steps if stop_at is None else min(stop_at, tc.steps)
  writer = reporting.MetricsWriter(workdir, start)

  step = start
  with _StopOnSigterm() as stop_signal:
    for step in range(start + 1, end + 1):
      t0 = time.perf_counter()
      plain, rng, key = _plain_rollouts(state.params, model_config, sampler, step, n_plain, tc, sampling, stop,
                                        tokenizer.pad_id, rc.router_replay)
      sets = [plain]
      if n_agg:
        sources, tails = _aggregation_sources(sets[0], n_agg, rc.aggregation_candidates, rc.aggregation_tail, rng)
        agg_tasks = rl_tasks.aggregation_tasks(sources, tails, tokenizer, chat_template)
        sets.append(_sample(state.params, model_config, agg_tasks, agg_width, G, T, jax.random.fold_in(key, 1),
                            sampling, stop, tokenizer.pad_id, rc.router_replay))
      for s in sets:
        s.score(tokenizer, canary)
      t_rollout = time.perf_counter() - t0

      batches = [_training_batch(s, rc, length_cfg, best) for s in sets]
      lr = float(schedule(_update_count(state.opt_state)))
      state, totals = _policy_updates(state, sets, batches, M, rc.rollouts_per_pass, logprobs_fn, grads_fn,
                                      apply_fn)
      state = state._replace(step=state.step + 1)
      t_update = time.perf_counter() - t0 - t_rollout

      sampler.update_curriculum(sets[0].tasks, sets[0].correct)
      for source, rate in rl_report.solve_rates(sets).items():
        best[source] = max(best.get(source, 0.0), rate)
      counts = totals.pop("counts")
      record = {"step": step, **rl_report.step_metrics(sets, totals), "lr": lr, "rollout_s": t_rollout,
                "update_s": t_update, **(reporting.router_summary(counts) if counts is not None else {})}
      writer.write(record)
      if step % tc.log_every == 0 or step == end:
        print(rl_report.progress_line(record, tc.steps), flush=True)
      if tc.eval_every and step % tc.eval_every == 0:
        result = heldout.evaluate_heldout(state.params, model_config, tokenizer, chat_template,
                                          config.heldout.to_dict())
        writer.write({"step": step, "heldout_accuracy": result["accuracy"],
                      **({"heldout_avg_at_k": result["sampled"]["accuracy"]} if "sampled" in result else {})})
        print(f"step {step}: {heldout.format_heldout(result)}", flush=True)
      if step % tc.checkpoint_every == 0 or step == end or stop_signal.requested:
        checkpointer.save(state, _ExtraState({"curriculum": sampler.curriculum_state(), "best_solve_rate": best}))
      if stop_signal.requested:
        break
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if step == tc.steps:
    rl_report.plot(workdir)
  return state


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """An RL stage's config.json read over `base_config()`: a run from before a field existed gets its default."""
  raw = stages.read_json(os.path.join(workdir, "config.json"))
  if raw is None or raw.get("stage") != "rl":
    found = "no config.json" if raw is None else f"a config.json with stage={raw.get('stage')!r}"
    raise RLConfigError(f"{workdir} is not an RL stage's workdir: it has {found}")
  config = base_config()
  config.update(raw)
  return config


def replay(config: ml_collections.ConfigDict, params, tokenizer: Tokenizer, chat_template: ChatTemplate,
           steps) -> np.ndarray:
  """Correctness [S, P, G] of `params` on the plain prompts of `steps` (S of them) of the RL stage `config` (a
  run's, `run_config`), drawn and sampled as the loop drew them: the same tasks and sampling keys.

  Scoring a run's checkpoints this way compares them, paired, on the prompts the run trained on: whether its
  updates raised the reward of what they saw, apart from whether that carried over to held-out problems
  (benchmarks/rl_replay.py). The params of checkpoint s - 1 reproduce step s's logged rollouts. Stages with the
  environment curriculum are refused: their draws depend on the run's history."""
  if config.rewards.mix.envs > 0:
    raise RLConfigError("replay needs a stage without the environment curriculum (rewards.mix.envs = 0): "
                        "its prompts depend on the run's history")
  n_plain, _ = _check(config)
  model_config = ZayaConfig.from_dict(config.model.to_dict())
  sampler, sampling, stop, canary = _rollout_setup(config, model_config, tokenizer, chat_template)
  params = jax.device_put(params, jax.devices()[0])  # as the loop's state: the same compiled sampler
  correct = []
  for step in steps:
    plain, _, _ = _plain_rollouts(params, model_config, sampler, int(step), n_plain, config.train, sampling, stop,
                                  tokenizer.pad_id)
    plain.score(tokenizer, canary)
    correct.append(plain.correct)
  return np.stack(correct)


def run(config: ml_collections.ConfigDict, workdir: str, init: str):
  """Runs (or resumes) an RL stage from the checkpoint `init` in `workdir`; returns the params. A finished
  stage writes summary.json (held-out accuracy before and after, and the last steps' RL metrics)."""
  config, loaded = stages.start_stage(config, workdir, init)
  state = train_rl(config, workdir, loaded.params, loaded.tokenizer, loaded.chat_template)
  if int(state.step) == config.train.steps:
    stages.finish_stage(config, workdir, init, state.params, loaded, rl=rl_report.stage_summary(workdir))
  return state.params
