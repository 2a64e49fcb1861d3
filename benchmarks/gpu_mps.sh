#!/usr/bin/env bash
# Issue 19, item 3: do several runs on one GPU add throughput under CUDA MPS? One device call (~4 min).
#   vanilla alone for STEPS steps, then N copies at once with the MPS daemon up (kernels of the N
#   processes share the GPU instead of time-slicing it); the aggregate real tokens/s of the N against
#   the one. usage (GPU machine, repo root, wheels in .whl/, ListOps in $DATA): bash benchmarks/gpu_mps.sh
set -uo pipefail
RES=${OUT:-/tmp/results}/mps; mkdir -p "$RES"
source benchmarks/gpu_env.sh   # wheels, PYTHONPATH, LD_LIBRARY_PATH, ZOO_DATA_CACHE, DATA
N=${N:-3}; STEPS=${STEPS:-1500}; LAYER=${LAYER:-vanilla}
speed() {  # $1: the run's label
  timeout "${RUN_TIMEOUT:-200}" python3 benchmarks/train_speed.py --layers "$LAYER" --eager --steps "$STEPS" \
    --out "$RES/$1" --set "data.root=$DATA" > "$RES/$1.log" 2>&1
}
speed alone
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
if nvidia-cuda-mps-control -d; then
  for i in $(seq 1 "$N"); do speed "mps_$i" & done
  wait
  echo quit | nvidia-cuda-mps-control
else
  echo "nvidia-cuda-mps-control -d failed: no MPS on this machine" > "$RES/no_mps.txt"
fi
python3 - "$RES" "$N" <<'PY'
import json, sys
from pathlib import Path
res, n = Path(sys.argv[1]), int(sys.argv[2])
def row(name):
    f = res / name / "train_speed.json"
    return json.loads(f.read_text())["rows"][0] if f.exists() else None
alone, shared = row("alone"), [row(f"mps_{i}") for i in range(1, n + 1)]
lines = ["| runs | step ms (median, each) | real tokens/s (sum) | vs one run |", "|---|---|---|---|"]
if alone:
    lines.append(f"| 1 | {alone['step_ms_median']:.1f} | {alone['tokens_per_s']:,.0f} | 1.00x |")
if alone and all(shared):
    total = sum(r["tokens_per_s"] for r in shared)
    steps = ", ".join(f"{r['step_ms_median']:.1f}" for r in shared)
    lines.append(f"| {n} under MPS | {steps} | {total:,.0f} | {total / alone['tokens_per_s']:.2f}x |")
text = "\n".join(lines)
(res / "mps.md").write_text(text + "\n")
print(text)
PY
