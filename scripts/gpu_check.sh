#!/usr/bin/env bash
# Everything of issue 13 that needs a GPU, in one run of under 8 minutes on one H100/H200 (each step has a time
# limit: 180 s for the tests, 270 s for the bench):
#   1. the tests marked `gpu` (CUDA paths of compile, bf16/fp16, CUDA graphs, the Triton projector, ...)
#   2. the priors' speed bench on CUDA: DnCNN, DRUNet, the MNIST UNet and the ffhq_10m-shaped ADM (random
#      weights) at batch 1 and 8, eager fp32 vs bf16 vs fp16 vs compiled vs compiled bf16: seconds per call,
#      images/s, each call's peak CUDA memory -> bench_gpu.json (written after every prior, so a run cut
#      short keeps what it measured).
# Usage:  bash scripts/gpu_check.sh [out_dir]          (PYTHON=/path/to/python to choose the interpreter)
#         DEVICE=cpu bash scripts/gpu_check.sh /tmp/x  (the same steps on CPU, small: checks the script itself)
# Exit status: 1 when a step failed (the others still run); the log says which.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-.}
mkdir -p "$OUT"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
DEVICE=${DEVICE:-cuda}
status=0
t0=$(date +%s)
step() { echo "== $(( $(date +%s) - t0 )) s: $*"; }

if [ "$DEVICE" = cuda ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "error: torch ($("$PY" -c 'import torch; print(torch.__version__)')) sees no CUDA GPU; run this on a GPU machine." >&2
    exit 2; }
  "$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/inductor_cache}
  PRIORS=dncnn_gray,drunet_gray,ddpm_mnist,adm_ffhq_random
  BATCH=1,8
  MODES=eager,bf16,fp16,compiled,compiled_bf16
  ROUNDS=10
  TEST_LIMIT=180
  BENCH_LIMIT=270
else  # a quick CPU pass over the same code paths (the ADM would take minutes per call here)
  PRIORS=dncnn_mnist,ddpm_mnist
  BATCH=1,2
  MODES=eager,bf16,fp16
  ROUNDS=2
  TEST_LIMIT=400
  BENCH_LIMIT=120
fi

step "pytest -m gpu"
timeout "$TEST_LIMIT" "$PY" -m pytest -q -m gpu tests 2>&1 | tail -25
rc=${PIPESTATUS[0]}
# 5 = no tests collected (CPU: every gpu test is skipped, which is not a failure)
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then echo "FAILED: pytest -m gpu (exit $rc)"; status=1; fi

step "bench --suite priors --device $DEVICE"
timeout "$BENCH_LIMIT" "$PY" scripts/bench.py --suite priors --device "$DEVICE" --priors "$PRIORS" \
  --batch "$BATCH" --modes "$MODES" --rounds "$ROUNDS" --json "$OUT/bench_gpu.json"
rc=$?
if [ "$rc" -ne 0 ]; then echo "FAILED: bench (exit $rc; $OUT/bench_gpu.json holds the priors finished)"; status=1; fi

step "done (exit $status); results in $OUT/bench_gpu.json"
exit $status
