"""The model with moe_impl='pallas' and router_impl='pallas': same function as the reference dispatch (CPU,
interpret mode), and the whole forward pass cross-lowers for ROCm and CUDA through Triton kernels only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_CONFIGS

import pallas_kernels
from zaya_jax import api, forward


@pytest.mark.slow  # the default run covers pallas in the model through tests/test_router_replay.py (values)
def test_pallas_forward_and_grads_equal_reference(reference_models):
  config, _, params = reference_models("mha")  # block 0 and a scanned stack of one (interpret mode is slow)
  ids = np.random.RandomState(40).randint(0, config.vocab_size, (2, 7))

  def loss_and_grad(impl):
    cfg = config.replace(moe_impl=impl, router_impl="pallas" if impl == "pallas" else "xla")
    return jax.value_and_grad(lambda p: jnp.sum(forward(p, cfg, ids) ** 2) / 1e4)(params)

  ref_loss, ref_grads = loss_and_grad("reference")
  loss, grads = loss_and_grad("pallas")
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(float(np.abs(b).max()), 1e-3))


@pytest.mark.parametrize("platform", ["rocm", "cuda"])
def test_pallas_forward_cross_lowers_to_triton(platform):
  config = TINY_CONFIGS["base"].replace(moe_impl="pallas", router_impl="pallas", dtype="bfloat16",
                                        param_dtype="bfloat16")
  params = jax.eval_shape(lambda: api.init_params(config, jax.random.key(0)))
  ids = jax.ShapeDtypeStruct((2, 16), jnp.int32)
  with pallas_kernels.interpret_mode(False):
    lowered = jax.jit(lambda p, x: api._forward(p, config, x, None, None, None, False)).trace(params, ids).lower(
        lowering_platforms=(platform,))
  text = lowered.as_text()
  # Per scanned stack: the router kernel and two grouped matmuls; block 0 and the stack are traced once each.
  assert text.count("__gpu$xla.gpu.triton") >= 6
  assert "mosaic_gpu" not in text
