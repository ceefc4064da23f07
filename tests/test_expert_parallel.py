"""Expert-parallel dispatch index math, the ragged transport through an emulated `ragged_all_to_all`, and its
lowering for GPUs (the model's multi-device run is in tests/test_sharding.py).

XLA:CPU cannot execute `ragged_all_to_all`, so the ragged transport is checked here against an emulation written
from the collective's documented semantics, and by cross-lowering for cuda/rocm.
"""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zaya_jax import expert_parallel as ep_lib
from zaya_jax import moe
from zaya_jax.config import ConfigError, ZayaConfig

E, EP = 4, 2  # 4 experts over 2 devices: experts 0,1 on device 0 and 2,3 on device 1; class 4 = skip


def test_send_plan_hand_checked():
  choice = jnp.array([3, 0, E, 1, 2, 0])
  plan = ep_lib.send_plan(choice, E, EP, cap=3)
  # device 0 gets tokens 1, 3, 5 (experts 0, 1, 0); device 1 gets tokens 0, 4 (experts 1, 0 locally).
  np.testing.assert_array_equal(plan.slot, [3, 0, 6, 1, 4, 2])
  np.testing.assert_array_equal(plan.gather_rows, [1, 3, 5, 0, 4, 6])
  np.testing.assert_array_equal(plan.local_expert, [0, 1, 0, 1, 0, 2])
  assert int(plan.dropped) == 0


@pytest.mark.parametrize("choice", [[E] * 5, [2] * 7, [0, 0, 1, E, 1, 0, 1], [3, 2, 3, 3, E, 2, 3, 2, 3]])
@pytest.mark.parametrize("cap_factor", [None, 1.0, 0.5])
def test_send_plan_keeps_every_token_that_fits(choice, cap_factor):
  choice = jnp.array(choice)
  N = len(choice)
  cap = ep_lib.capacity(N, EP, cap_factor)
  plan = ep_lib.send_plan(choice, E, EP, cap)
  c = np.asarray(choice)
  dest = np.where(c < E, c // (E // EP), EP)
  expected_kept = sum(min(int(np.sum(dest == d)), cap) for d in range(EP))
  kept = np.asarray(plan.slot) < EP * cap
  assert kept.sum() == expected_kept
  assert int(plan.dropped) == int(np.sum(c < E)) - expected_kept
  np.testing.assert_array_equal(np.asarray(plan.gather_rows)[np.asarray(plan.slot)[kept]], np.flatnonzero(kept))
  slots = np.asarray(plan.slot)[kept]
  np.testing.assert_array_equal(slots // cap, dest[kept])  # each token lands in its destination's section
  np.testing.assert_array_equal(np.asarray(plan.local_expert)[slots], c[kept] % (E // EP))
  if cap_factor is None:
    assert int(plan.dropped) == 0


def test_capacity():
  assert ep_lib.capacity(10, 4, None) == 10
  assert ep_lib.capacity(10, 4, 1.0) == 3
  assert ep_lib.capacity(10, 4, 100.0) == 10
  with pytest.raises(ValueError, match="capacity_factor must be positive"):
    ep_lib.capacity(10, 4, 0.0)


# The ragged transport --------------------------------------------------------------------------------------------


def emulate_ragged_all_to_all(operands, outputs, input_offsets, send_sizes, output_offsets, recv_sizes):
  """Every device's result of `jax.lax.ragged_all_to_all`, from every device's arguments (lists over devices).

  Per its documentation: device s sends operand[input_offsets[d] : + send_sizes[d]] to device d, which writes it
  at s's output_offsets[d]; d's recv_sizes[s] must equal that size. Also asserts the receiver's slices stay inside
  its buffer and never overlap (a plan that overlaps would silently lose rows on a GPU).
  """
  ep = len(operands)
  results = [np.array(o, copy=True) for o in outputs]
  written = [np.zeros(len(o), int) for o in outputs]
  for src in range(ep):
    for dst in range(ep):
      n, i, o = int(send_sizes[src][dst]), int(input_offsets[src][dst]), int(output_offsets[src][dst])
      assert n == int(recv_sizes[dst][src])
      assert 0 <= i and i + n <= len(operands[src]) and 0 <= o and o + n <= len(results[dst])
      results[dst][o:o + n] = np.asarray(operands[src])[i:i + n]
      written[dst][o:o + n] += 1
  assert all(w.max(initial=0) <= 1 for w in written)
  return results


def test_emulation_matches_documented_example():
  # The two-device example of jax.lax.ragged_all_to_all's docstring.
  out = emulate_ragged_all_to_all(
      operands=[[1, 2, 2], [3, 4, 0]], outputs=[[0] * 4, [0] * 4], input_offsets=[[0, 1], [0, 1]],
      send_sizes=[[1, 2], [1, 1]], output_offsets=[[0, 0], [1, 2]], recv_sizes=[[1, 1], [2, 1]])
  np.testing.assert_array_equal(out[0], [1, 3, 0, 0])
  np.testing.assert_array_equal(out[1], [2, 2, 4, 0])


def test_ragged_send_plan_hand_checked():
  choice = jnp.array([3, 0, E, 1, 2, 0])  # destinations 1, 0, skip, 0, 1, 0
  plan = ep_lib.ragged_send_plan(choice, E, EP, cap=6)
  np.testing.assert_array_equal(plan.order, [1, 3, 5, 0, 4, 2])  # device 0's tokens, device 1's, then skip
  np.testing.assert_array_equal(plan.row, [3, 0, 6, 1, 4, 2])  # skip token 2: row N (never sent)
  np.testing.assert_array_equal(plan.local_expert[:5], [0, 1, 0, 1, 0])
  np.testing.assert_array_equal(plan.send_sizes, [3, 2])
  np.testing.assert_array_equal(plan.input_offsets, [0, 3])
  assert int(plan.dropped) == 0
  # cap 2: token 5 is device 0's third token, dropped; its row stays in the buffer but is not sent.
  plan = ep_lib.ragged_send_plan(choice, E, EP, cap=2)
  np.testing.assert_array_equal(plan.row, [3, 0, 6, 1, 4, 6])
  np.testing.assert_array_equal(plan.send_sizes, [2, 2])
  np.testing.assert_array_equal(plan.input_offsets, [0, 3])
  assert int(plan.dropped) == 1


def test_ragged_send_plan_one_device_empty_and_all_skip():
  plan = ep_lib.ragged_send_plan(jnp.array([2, 3, 2, 2, 3]), E, EP, cap=5)  # all on device 1, device 0 empty
  np.testing.assert_array_equal(plan.order, np.arange(5))
  np.testing.assert_array_equal(plan.row, np.arange(5))
  np.testing.assert_array_equal(plan.local_expert, [0, 1, 0, 0, 1])
  np.testing.assert_array_equal(plan.send_sizes, [0, 5])
  np.testing.assert_array_equal(plan.input_offsets, [0, 0])
  plan = ep_lib.ragged_send_plan(jnp.array([E] * 4), E, EP, cap=4)
  np.testing.assert_array_equal(plan.row, [4] * 4)
  np.testing.assert_array_equal(plan.send_sizes, [0, 0])
  assert int(plan.dropped) == 0


def test_ragged_exchange_hand_checked():
  # Device 0 sends 3 rows to itself and 2 to device 1; device 1 sends 1 to device 0 and 4 to itself.
  sizes = jnp.array([[3, 2], [1, 4]])
  offsets = jnp.array([[0, 3], [0, 1]])
  ex0 = ep_lib.ragged_exchange(sizes, offsets, 0)
  ex1 = ep_lib.ragged_exchange(sizes, offsets, 1)
  np.testing.assert_array_equal(ex0.output_offsets, [0, 0])  # first in both receive buffers
  np.testing.assert_array_equal(ex1.output_offsets, [3, 2])  # after device 0's rows
  np.testing.assert_array_equal(ex0.recv_sizes, [3, 1])
  np.testing.assert_array_equal(ex1.recv_sizes, [2, 4])
  np.testing.assert_array_equal(ex0.recv_offsets, [0, 3])
  np.testing.assert_array_equal(ex1.recv_offsets, [0, 2])
  np.testing.assert_array_equal(ex0.return_offsets, [0, 0])
  np.testing.assert_array_equal(ex1.return_offsets, [3, 1])


def _ragged_moe_emulated(x_ND, choice_N, weight_N, gate_up, down, ep, cap):
  """The ragged transport's per-device steps (as in `_local_moe_ragged`) for all ep devices at once, both
  exchanges through `emulate_ragged_all_to_all` -> (out [N, D], dropped, delivered [(device, token ids)])."""
  num_experts = gate_up.shape[0]
  e_loc = num_experts // ep
  n_loc = x_ND.shape[0] // ep
  xs = np.split(np.asarray(x_ND), ep)
  plans = [ep_lib.ragged_send_plan(c, num_experts, ep, cap) for c in jnp.split(choice_N, ep)]
  sizes = jnp.stack([p.send_sizes for p in plans])
  offsets = jnp.stack([p.input_offsets for p in plans])
  exs = [ep_lib.ragged_exchange(sizes, offsets, d) for d in range(ep)]
  R = ep * cap
  dispatch = lambda operands, fill: emulate_ragged_all_to_all(
      operands, [np.full((R,) + np.shape(operands[0])[1:], fill, np.asarray(operands[0]).dtype)] * ep,
      [p.input_offsets for p in plans], [p.send_sizes for p in plans], [e.output_offsets for e in exs],
      [e.recv_sizes for e in exs])
  recv = dispatch([x[np.asarray(p.order)] for x, p in zip(xs, plans)], 0)
  recv_ids = dispatch([p.local_expert for p in plans], e_loc)
  token_ids = dispatch([d * n_loc + np.asarray(p.order) for d, p in enumerate(plans)], -1)
  ys = [moe.expert_ffn(jnp.asarray(r), jnp.asarray(i), jnp.ones((R,)), gate_up[d * e_loc:(d + 1) * e_loc],
                       down[d * e_loc:(d + 1) * e_loc], moe_impl="reference", block_size=8)
        for d, (r, i) in enumerate(zip(recv, recv_ids))]
  back = emulate_ragged_all_to_all(
      ys, [np.zeros((n_loc, x_ND.shape[1]), np.float32)] * ep, [e.recv_offsets for e in exs],
      [e.recv_sizes for e in exs], [e.return_offsets for e in exs], [p.send_sizes for p in plans])
  weight = np.where(np.asarray(choice_N) < num_experts, np.asarray(weight_N), 0)
  out = np.concatenate([np.asarray(moe.take_rows(jnp.asarray(b), p.row)) for b, p in zip(back, plans)])
  delivered = [(d, t[t >= 0], np.asarray(i)[t >= 0]) for d, (t, i) in enumerate(zip(token_ids, recv_ids))]
  return out * weight[:, None], sum(int(p.dropped) for p in plans), delivered


@pytest.mark.parametrize("ep,e_loc,n_loc", [(2, 2, 6), (4, 1, 5), (4, 3, 7)])
@pytest.mark.parametrize("cap_factor", [None, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_ragged_transport_through_emulated_collective(ep, e_loc, n_loc, cap_factor, seed):
  """Every routed token reaches its expert's device once, with its expert id, and comes back to its own row:
  the MoE through the emulated transport equals the reference (dropless) and keeps what `send_plan` keeps."""
  num_experts, D, inter = ep * e_loc, 8, 6
  rng = np.random.default_rng(seed)
  N = ep * n_loc
  # Skewed routes: a third skip, the rest mostly to the first expert (uneven counts, some devices empty).
  p = np.full(num_experts + 1, 0.5 / num_experts)
  p[0] += 0.5 - 1 / 3
  p[-1] = 1 / 3
  choice = jnp.asarray(rng.choice(num_experts + 1, size=N, p=p / p.sum()), jnp.int32)
  weight = jnp.asarray(rng.uniform(0.5, 1.5, N), jnp.float32)
  x = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
  gate_up = jnp.asarray(rng.normal(size=(num_experts, D, 2 * inter)) / np.sqrt(D), jnp.float32)
  down = jnp.asarray(rng.normal(size=(num_experts, inter, D)) / np.sqrt(inter), jnp.float32)
  cap = ep_lib.capacity(n_loc, ep, cap_factor)
  out, dropped, delivered = _ragged_moe_emulated(x, choice, weight, gate_up, down, ep, cap)

  # The tokens `send_plan` (all_to_all transport) keeps: the same set must arrive, each once, at the right place.
  kept = np.concatenate([np.asarray(ep_lib.send_plan(c, num_experts, ep, cap).slot) < ep * cap
                         for c in jnp.split(choice, ep)])
  assert dropped == int(np.sum(np.asarray(choice) < num_experts)) - int(kept.sum())
  arrived = np.concatenate([t for _, t, _ in delivered])
  np.testing.assert_array_equal(np.sort(arrived), np.flatnonzero(kept))
  c = np.asarray(choice)
  for device, tokens, ids in delivered:
    np.testing.assert_array_equal(c[tokens] // e_loc, device)
    np.testing.assert_array_equal(ids, c[tokens] % e_loc)

  kept_choice = jnp.where(jnp.asarray(kept), choice, num_experts)  # dropped tokens output zeros
  ref = moe.reference_ffn(x, kept_choice, weight, gate_up, down)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  if cap_factor is None:
    assert dropped == 0
    np.testing.assert_allclose(out, moe.expert_ffn(x, choice, weight, gate_up, down, moe_impl="reference",
                                                   block_size=8), rtol=1e-5, atol=1e-5)


def test_resolve_transport(monkeypatch):
  assert ep_lib.resolve_transport("all_to_all") == "all_to_all"
  assert ep_lib.resolve_transport("ragged") == "ragged"
  for backend, expected in (("cpu", "all_to_all"), ("tpu", "all_to_all"), ("gpu", "ragged"), ("cuda", "ragged"),
                            ("rocm", "ragged")):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert ep_lib.resolve_transport("auto") == expected
  with pytest.raises(ValueError, match="transport must be one of"):
    ep_lib.resolve_transport("nccl")


def test_config_moe_transport():
  config = ZayaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, moe_intermediate_size=16, num_experts=2,
                      router_hidden_size=8, eos_token_id=1)
  assert config.moe_transport == "auto"
  for transport in ("all_to_all", "ragged"):
    assert config.replace(moe_transport=transport).moe_transport == transport
  with pytest.raises(ConfigError, match="moe_transport must be one of"):
    config.replace(moe_transport="nccl")
  ragged = config.replace(moe_transport="ragged")
  assert ZayaConfig.from_dict(dataclasses.asdict(ragged)) == ragged
  # A runtime choice like moe_impl: not written to config.json, settable when loading one.
  assert "moe_transport" not in ragged.to_hf()
  assert ZayaConfig.from_hf(ragged.to_hf()) == config
  assert ZayaConfig.from_hf(ragged.to_hf(), moe_transport="ragged") == ragged



def test_posttrain_stage_may_choose_the_transport():
  """A runtime field like moe_impl: a stage config may set it without contradicting the init checkpoint."""
  import ml_collections

  from zaya_jax.data.tokenizer import ByteTokenizer
  from zaya_jax.posttrain import stages

  model = ZayaConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=16, moe_intermediate_size=16, num_experts=2,
                     router_hidden_size=8, eos_token_id=1)
  config = ml_collections.ConfigDict({"model": {"moe_transport": "ragged"}})
  assert stages.with_checkpoint_model(config, model, ByteTokenizer()).model.moe_transport == "ragged"

_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    from zaya_jax import ZayaConfig, expert_parallel as ep_lib, forward, init_params, moe, sharding
    assert jax.device_count() == 8
    real_ragged_all_to_all = jax.lax.ragged_all_to_all

    def emulated(operand, output, input_offsets, send_sizes, output_offsets, recv_sizes, *, axis_name):
      # Inside shard_map: gather every device's operand and plan, then write the slices addressed to this one.
      me = jax.lax.axis_index(axis_name)
      operands = jax.lax.all_gather(operand, axis_name)
      in_off, sizes, out_off = (jax.lax.all_gather(a, axis_name)[:, me]
                                for a in (input_offsets, send_sizes, output_offsets))
      k = jnp.arange(output.shape[0])
      for src in range(operands.shape[0]):
        hit = (k >= out_off[src]) & (k < out_off[src] + sizes[src])
        rows = operands[src][jnp.clip(in_off[src] + k - out_off[src], 0, operand.shape[0] - 1)]
        output = jnp.where(hit.reshape((-1,) + (1,) * (output.ndim - 1)), rows, output)
      return output

    E, D, inter, N = 8, 16, 12, 64
    keys = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(keys[0], (N, D))
    choice = jax.random.randint(keys[1], (N,), 0, E + 1).at[:10].set(E).at[10:30].set(3)  # skips, a hot expert
    weight = jax.random.uniform(keys[2], (N,), minval=0.5, maxval=1.5)
    gate_up = jax.random.normal(keys[3], (E, D, 2 * inter)) / 4
    down = jax.random.normal(keys[4], (E, inter, D)) / 4
    ref = moe.reference_ffn(x, choice, weight, gate_up, down)
    loss_ref = lambda x, gu: jnp.sum(jnp.sin(moe.reference_ffn(x, choice, weight, gu, down)))
    grads_ref = jax.grad(loss_ref, argnums=(0, 1))(x, gate_up)

    def run(mesh, transport, capacity_factor=None, grad=False):
      batch_axes = tuple(a for a in ep_lib.BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
      f = lambda x, gu: ep_lib.expert_parallel_ffn(x, choice, weight, gu, down, mesh=mesh, batch_axes=batch_axes,
                                                   moe_impl="blocked", block_size=8,
                                                   capacity_factor=capacity_factor, transport=transport)
      loss = lambda x, gu: jnp.sum(jnp.sin(f(x, gu)[0]))
      with jax.set_mesh(mesh):
        return jax.jit(f)(x, gate_up), (jax.jit(jax.grad(loss, argnums=(0, 1)))(x, gate_up) if grad else None)

    jax.lax.ragged_all_to_all = emulated
    try:
      for axes, grad in (({"data": 2, "expert": 4}, True), ({"expert": 8}, False)):
        mesh = sharding.make_mesh(axes)
        (out, dropped), grads = run(mesh, "ragged", grad=grad)
        assert int(dropped) == 0
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
        for a, b in zip(grads or (), grads_ref):
          np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
      # With a capacity both transports drop the same tokens.
      (out_r, dropped_r), _ = run(mesh, "ragged", 0.5)
      (out_a, dropped_a), _ = run(mesh, "all_to_all", 0.5)
      assert int(dropped_r) == int(dropped_a) > 0
      np.testing.assert_allclose(out_r, out_a, rtol=1e-5, atol=1e-5)
    finally:
      jax.lax.ragged_all_to_all = real_ragged_all_to_all

    # Cross-lowering for GPUs (no GPU here): the ragged transport becomes the ragged-all-to-all collective.
    mesh = sharding.make_mesh({"data": 2, "expert": 4})
    batch_axes = ("data", "expert")
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(batch_axes))
    xs, cs, ws = (jax.device_put(a, spec) for a in (x, choice, weight))
    experts = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("expert"))
    gu, dn = jax.device_put(gate_up, experts), jax.device_put(down, experts)
    def ffn(transport):
      return lambda x, gu: ep_lib.expert_parallel_ffn(x, cs, ws, gu, dn, mesh=mesh, batch_axes=batch_axes,
                                                      moe_impl="blocked", block_size=8, transport=transport)[0]
    for platform in ("cuda", "rocm"):
      for transport, grad in (("ragged", False), ("ragged", True), ("all_to_all", False)):
        fwd = ffn(transport)
        f = jax.grad(lambda x, gu: jnp.sum(fwd(x, gu)), argnums=(0, 1)) if grad else fwd
        text = jax.jit(f).trace(xs, gu).lower(lowering_platforms=(platform,)).as_text()
        n = text.count("stablehlo.custom_call @ragged_all_to_all")
        # forward: tokens, expert ids, results back; the gradient adds the transposed exchanges.
        assert (n >= 3 if transport == "ragged" else n == 0), (platform, transport, grad, n)
        if not grad:  # (the transpose of ragged_all_to_all exchanges its offsets with a plain all_to_all)
          assert ("all_to_all" in text.replace("ragged_all_to_all", "")) == (transport == "all_to_all")
    # The model picks the transport from its config.
    config = ZayaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=8, moe_intermediate_size=16, num_experts=8,
                        router_hidden_size=8, eos_token_id=1, moe_block_size=8, moe_transport="ragged")
    params = sharding.shard_params(init_params(config, jax.random.key(0)), config, mesh)
    ids = jax.device_put(jnp.zeros((8, 4), jnp.int32), sharding.batch_sharding(mesh))
    with jax.set_mesh(mesh):
      text = jax.jit(lambda p, i: forward(p, config, i)).trace(params, ids).lower(
          lowering_platforms=("cuda",)).as_text()
    assert "stablehlo.custom_call @ragged_all_to_all" in text
    print("OK")
""")


def test_ragged_transport_multi_device_and_gpu_lowering():
  """8 CPU devices: the ragged transport (collective emulated) equals the reference, gradients included, and drops
  what all_to_all drops; lowered for cuda and rocm it contains the ragged-all-to-all collective."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT], env=env, cwd=root, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0 and "OK" in result.stdout, result.stdout[-3000:] + result.stderr[-6000:]
