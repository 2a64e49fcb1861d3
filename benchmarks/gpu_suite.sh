#!/usr/bin/env bash
# Everything this project measures on the GPU machine, in one go (see docs/kernels.md).
#   usage (on the H200, repo root):  RES=results bash benchmarks/gpu_suite.sh [tests|attention|ssm|all]
# Results go to $RES (default results/); with $OUT set (the device tool), also $OUT/results.tgz.
# Needs the wheels of ../shared/wheels (+ omegaconf, antlr4) in .whl/ (see GPU.md).
set -uo pipefail
what=${1:-all}
RES=${RES:-results}
mkdir -p "$RES"
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl >/dev/null 2>&1 || true
export PYTHONPATH="$PWD:$SITE:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1 KINETO_LOG_LEVEL=5
CUDA12="$SITE/nvidia/cuda_runtime/lib"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$RES/env.txt" 2>&1

if [[ $what == all || $what == tests ]]; then
  # 1) xformers without its CUDA 12 runtime: must warn once and fall back, never crash
  python3 - > "$RES/xformers_fallback.txt" 2>&1 <<'PY'
import warnings, torch
from zoo.functional.attention import make_call
from zoo.functional import backends
warnings.simplefilter("always")
call = make_call((1, 8, 1024, 64), torch.bfloat16, torch.device("cuda"), decay=None, chunk=None, causal=False, padded=False, requires_grad=True)
with warnings.catch_warnings(record=True) as w:
    picked = backends.select(call).name
print("picked without CUDA 12 runtime:", picked)
print("warnings:", [str(x.message)[:300] for x in w])
PY
  # 2) the GPU-marked tests with xformers active
  LD_LIBRARY_PATH="$CUDA12:${LD_LIBRARY_PATH:-}" python3 -m xformers.info > "$RES/xformers_info.txt" 2>&1
  LD_LIBRARY_PATH="$CUDA12:${LD_LIBRARY_PATH:-}" python3 -m pytest -q -m gpu -p no:cacheprovider -n 8 tests 2>&1 | tail -40 > "$RES/gpu_tests.txt"
  LD_LIBRARY_PATH="$CUDA12:${LD_LIBRARY_PATH:-}" python3 -m zoo.cli info > "$RES/zoo_info.txt" 2>&1
fi
if [[ $what == all || $what == attention ]]; then
  LD_LIBRARY_PATH="$CUDA12:${LD_LIBRARY_PATH:-}" python3 benchmarks/bench_attention.py --out "$RES" > "$RES/attention_log.txt" 2>&1
fi
if [[ $what == all || $what == ssm ]]; then
  python3 benchmarks/bench_ssm.py --out "$RES" > "$RES/ssm_log.txt" 2>&1
fi
ls -la "$RES"
if [[ -n ${OUT:-} ]]; then tar czf "$OUT/results-$what.tgz" -C "$RES" .; fi
