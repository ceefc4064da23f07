#!/usr/bin/env bash
# Everything that needs a GPU, in one run of a few minutes (CUDA or ROCm):
#   1. benchmarks/gpu_kernels.py: the Pallas kernels compiled through Triton at ZAYA1-8B shapes, bf16 numerics
#      against their pure-JAX references, and timings;
#   2. the kernel tests compiled instead of interpreted (fp32 at full precision, so the CPU tolerances hold);
#   3. benchmarks/decode.py with transformers on the same GPU;
#   4. benchmarks/moe_block.py: the expert FFN under each moe_impl in bf16.
#
#   bash benchmarks/gpu_checks.sh [OUT_DIR [STEP...]]  # one log per step in OUT_DIR (default gpu_checks_out);
#                                                     # STEPs: gpu_kernels kernel_tests decode moe_block (all)
#
# Each step has its own time limit, so a hang in one still leaves the others' results.
set -u
out=${1:-gpu_checks_out}
selected=" ${*:2} "
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute: the steps run from the repository root
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  if [[ "$selected" != "  " && "$selected" != *" $name "* ]]; then return; fi
  echo "== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  tail -n 40 "$out/$name.txt"
  echo "== $name: exit $rc after $((SECONDS - start))s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || rocm-smi 2>/dev/null | head -5
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
step gpu_kernels 120 python3 benchmarks/gpu_kernels.py
# -m "": the model test marked slow (slow only when interpreted on a CPU) runs too.
step kernel_tests 150 env JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest -q -p no:cacheprovider -m "" \
  tests/test_pallas_gmm.py tests/test_pallas_router.py tests/test_pallas_model.py tests/test_router_replay.py
step decode 120 python3 benchmarks/decode.py --torch-device cuda
step moe_block 60 python3 benchmarks/moe_block.py --dtype bfloat16 --tokens 4096 16384 \
  --impls auto pallas ragged_dot blocked reference
