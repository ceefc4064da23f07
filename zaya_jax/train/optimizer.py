"""The pretraining optimiser: Muon for hidden matrices, AdamW for the rest, frozen balancing biases.

ZAYA1 was trained with "Muon with AdamW-RMS matching" (RSA_AND_POSTTRAINING.md §5.3): Muon's orthogonalised
update is rescaled to the RMS of a typical AdamW update (Moonlight, arXiv 2502.16982), so one learning-rate
schedule and one weight decay serve both parameter groups.

Every parameter gets one of three labels (`param_labels`):
  "muon"   the dense projection matrices of attention, router and experts. A leaf [..., in, out] is
           orthogonalised per trailing [in, out] matrix: the stacked layer axis of `layers/...` and the expert
           axis of `gate_up_proj` [E, D, 2I] / `down_proj` [E, I, D] are batch axes.
  "adam"   embeddings (also the tied LM head), the router's 17-way classifier `out_proj_kernel` (an output
           layer, like the LM head), the CCA convolution kernels (per-channel filters over time, not maps
           between feature spaces), and every norm weight, bias, residual scale and attention temperature.
           Weight decay applies only to its matrices (ndim >= 2 per layer); decaying norm weights and scales
           towards 0 would fight their init of 1.
  "frozen" the routers' `balancing_biases`: they receive no gradient and are moved by the balancing rule
           (zaya_jax/train/balancing.py); `optax.set_to_zero` guarantees the optimiser never touches them.

bf16 compute with fp32 master weights needs nothing here: the model config's `param_dtype` (fp32) is the dtype
of the parameters, gradients and optimiser state, while `dtype` (bf16) is only the activation dtype the
layers cast the weights to. `tests/test_train_optimizer.py` checks this.
"""

from __future__ import annotations

import jax
import ml_collections
import optax
from optax.contrib import MuonDimensionNumbers, scale_by_muon

# Leaf names of the matrices Muon orthogonalises (attention, router MLP, experts).
MUON_KERNELS = frozenset({
    "q_proj", "k_proj", "v_proj_current", "v_proj_delayed", "o_proj",
    "down_proj_kernel", "fc1_kernel", "fc2_kernel",
    "gate_up_proj", "down_proj",
})
FROZEN = frozenset({"balancing_biases"})


def _leaf_name(path) -> str:
  return str(getattr(path[-1], "key", path[-1]))


def _is_stacked(path) -> bool:
  return any(getattr(k, "key", None) == "layers" for k in path)


def param_labels(params):
  """A pytree like `params` of "muon" / "adam" / "frozen" (see the module docstring)."""
  def label(path, leaf):
    name = _leaf_name(path)
    if name in FROZEN:
      return "frozen"
    if name in MUON_KERNELS:
      if leaf.ndim < 2:
        raise ValueError(f"Muon parameter {jax.tree_util.keystr(path)} must be a matrix, got shape {leaf.shape}")
      return "muon"
    return "adam"
  return jax.tree_util.tree_map_with_path(label, params)


def _matrix_dimension_numbers(updates):
  """Orthogonalise over the last two axes; all leading axes (layer stack, experts) are batch axes."""
  return jax.tree.map(lambda u: MuonDimensionNumbers(reduction_axis=u.ndim - 2, output_axis=u.ndim - 1), updates)


def scale_to_adamw_rms(rms: float) -> optax.GradientTransformation:
  """Rescales orthogonalised [..., in, out] updates to RMS `rms` (Moonlight's AdamW-RMS matching).

  An orthogonal in x out matrix has RMS 1/sqrt(max(in, out)), so multiplying by rms * sqrt(max(in, out)) gives
  every matrix the same update RMS, that of a typical AdamW step (~0.2).
  """
  def update_fn(updates, state, params=None):
    del params
    scaled = jax.tree.map(lambda u: u * (rms * max(u.shape[-2], u.shape[-1]) ** 0.5), updates)
    return scaled, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Learning rate per step: linear warmup to `cfg.lr`, then `cfg.schedule`.

  "wsd"      warmup-stable-decay: constant peak, then a linear decay to lr * min_lr_ratio over the last
             decay_fraction of training (the decay can be re-run from any stable-phase checkpoint).
  "cosine"   cosine decay from the peak to lr * min_lr_ratio at total_steps.
  "constant" peak after warmup (fine-tuning, ablations).
  """
  peak, final = cfg.lr, cfg.lr * cfg.min_lr_ratio
  warmup = min(cfg.warmup_steps, total_steps)
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1), final)
  if cfg.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)],
                                [warmup])
  if cfg.schedule == "wsd":
    decay = max(1, round(cfg.decay_fraction * total_steps))
    stable_end = max(warmup, total_steps - decay)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak),
         optax.linear_schedule(peak, final, total_steps - stable_end)],
        [warmup, stable_end])
  raise ValueError(f"optim.schedule must be 'wsd', 'cosine' or 'constant', got {cfg.schedule!r}")


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Global-norm clipping, then Muon / AdamW / frozen per `param_labels` (cfg.name "muon"), or AdamW on every
  trainable leaf (cfg.name "adamw"). Schedules are indexed by the optimiser's own step count."""
  lr = make_schedule(cfg, total_steps)
  adamw = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                      mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params))
  transforms = {"adam": adamw, "frozen": optax.set_to_zero()}
  if cfg.name == "muon":
    labels = param_labels
    transforms["muon"] = optax.chain(
        scale_by_muon(ns_steps=cfg.muon_ns_steps, beta=cfg.muon_momentum, nesterov=cfg.muon_nesterov,
                      weight_dimension_numbers=_matrix_dimension_numbers),
        scale_to_adamw_rms(cfg.muon_rms),
        optax.add_decayed_weights(cfg.weight_decay),
        optax.scale_by_learning_rate(lr))
  elif cfg.name == "adamw":
    labels = lambda params: jax.tree.map(lambda l: "adam" if l == "muon" else l, param_labels(params))
  else:
    raise ValueError(f"optim.name must be 'muon' or 'adamw', got {cfg.name!r}")
  return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.partition(transforms, labels))
