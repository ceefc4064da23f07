"""Train state, loss and the jitted train / eval steps (pure functions over pytrees).

A batch is the data pipeline's contract, all int32 [B, S]:
  tokens       token ids
  segment_ids  document id per token within its row (0 = padding)
  positions    position of each token within its document
  loss_mask    1 where the next token (the target at t+1) belongs to the same document, else 0
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from zaya_jax.api import forward, init_params
from zaya_jax.config import ZayaConfig
from zaya_jax.train import balancing as bal


class TrainState(NamedTuple):
  """Everything a bit-identical resume needs besides the data iterator (which orbax saves beside it).

  step       int32 [], optimiser steps done
  params     model parameters (fp32 master weights; the balancing biases included)
  opt_state  optax state of `make_optimizer`
  balancing  BalancingState, the AdamW moments of the router load error
  rng        uint32 [2] PRNG key, carried and checkpointed for stochastic training features; the ZAYA1
             pretraining step itself is deterministic (no dropout, argmax routing) and does not consume it
  """
  step: jax.Array
  params: Any
  opt_state: Any
  balancing: bal.BalancingState
  rng: jax.Array


def init_train_state(model_config: ZayaConfig, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  init_rng, rng = jax.random.split(jax.random.PRNGKey(seed))
  params = init_params(model_config, init_rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.jit(optimizer.init)(params),
                    balancing=bal.init_balancing(model_config.num_hidden_layers, model_config.num_experts),
                    rng=rng)


def next_token_loss(logits_BSV, tokens_BS, loss_mask_BS):
  """Mean next-token cross entropy over the masked positions -> (loss [], number of counted targets []).

  Position t predicts tokens[t+1] and counts where loss_mask[t] = 1; the last position has no target. The
  log-softmax runs in fp32 whatever the activation dtype. A batch without targets gives loss 0.
  """
  logp = jax.nn.log_softmax(logits_BSV[:, :-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, tokens_BS[:, 1:, None], axis=-1)[..., 0]
  mask = loss_mask_BS[:, :-1].astype(jnp.float32)
  n = mask.sum()
  return jnp.sum(nll * mask) / jnp.maximum(n, 1.0), n


def _model_loss(params, model_config, batch):
  logits, aux = forward(params, model_config, batch["tokens"], segment_ids=batch["segment_ids"],
                        positions=batch["positions"], return_aux=True)
  loss, n = next_token_loss(logits, batch["tokens"], batch["loss_mask"])
  counts = bal.expert_counts(aux["expert_index"], batch["segment_ids"] != 0, model_config.num_experts)
  return loss, (n, counts)


def apply_gradients(state: TrainState, grads, counts, optimizer: optax.GradientTransformation,
                    balancing_cfg: ml_collections.ConfigDict) -> TrainState:
  """One optimiser update, then the balancing biases' control step from the router counts [L, E+1] (the
  biases get no gradient; zaya_jax/train/balancing.py). The step counter is left to the caller."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  balancing = state.balancing
  if balancing_cfg.rate > 0:
    biases, balancing = bal.update_biases(bal.get_biases(params), balancing, counts, balancing_cfg)
    params = bal.set_biases(params, biases)
  return state._replace(params=params, opt_state=opt_state, balancing=balancing)


def make_train_step(model_config: ZayaConfig, optimizer: optax.GradientTransformation,
                    balancing_cfg: ml_collections.ConfigDict):
  """-> jitted train_step(state, batch) -> (new state, metrics); the input state's buffers are donated.

  metrics: loss [] (mean over this batch's targets), targets [], grad_norm [] (before clipping),
  counts [L, E+1] (tokens per router class and layer, for the balancing stats).
  """
  def train_step(state: TrainState, batch):
    grad_fn = jax.value_and_grad(_model_loss, has_aux=True)
    (loss, (n, counts)), grads = grad_fn(state.params, model_config, batch)
    new_state = apply_gradients(state, grads, counts, optimizer, balancing_cfg)._replace(step=state.step + 1)
    return new_state, {"loss": loss, "targets": n, "grad_norm": optax.global_norm(grads), "counts": counts}

  return jax.jit(train_step, donate_argnums=0)


def make_eval_step(model_config: ZayaConfig):
  """-> jitted eval_step(params, batch) -> {"nll_sum", "targets", "counts"} (sums, so batches add up)."""
  def eval_step(params, batch):
    loss, (n, counts) = _model_loss(params, model_config, batch)
    return {"nll_sum": loss * n, "targets": n, "counts": counts}

  return jax.jit(eval_step)
