#!/usr/bin/env bash
# The ListOps smoke experiment on the GPU for three layers (bf16 autocast path), plus the trainer
# tests there.   usage (GPU machine, repo root, wheels in .whl/):  bash benchmarks/gpu_train_smoke.sh
set -uo pipefail
RES=${RES:-results}; mkdir -p "$RES"
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl >/dev/null 2>&1 || true
export PYTHONPATH="$PWD:$SITE:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 KINETO_LOG_LEVEL=5
export LD_LIBRARY_PATH="$SITE/nvidia/cuda_runtime/lib:${LD_LIBRARY_PATH:-}"
python3 -m pytest -q -p no:cacheprovider tests/test_train.py 2>&1 | tail -3 > "$RES/train_tests.txt"
train() { python3 -m zoo.cli train listops_small "layer=$1" "train.run_name=listops_small_$1" "${@:2}" --out "$RES/runs" --no-progress > "$RES/train_$1.log" 2>&1; }
train s4d                      # generates the small ListOps set once (cache dir)
train las model.pos_emb=learned optim.lr=1e-3 &
train vanilla model.pos_emb=learned optim.lr=1e-3 &
wait
for l in s4d las vanilla; do python3 - "$RES/runs/listops_small" "$l" <<'PY'
import json, sys, glob
for p in sorted(glob.glob(sys.argv[1] + "_*/summary.json")):
    s = json.load(open(p))
    if s.get("layer") == sys.argv[2]:
        print(sys.argv[2], {k: s.get(k) for k in ("device", "precision", "steps", "best_val_acc", "test_acc", "train_seconds", "params")})
PY
done
for l in s4d las vanilla; do
  cp "$RES/runs/listops_small_$l/summary.json" "$RES/summary_$l.json" 2>/dev/null
  cp "$RES/runs/listops_small_$l/curve.png" "$RES/curve_$l.png" 2>/dev/null
done
tail -n 3 "$RES"/train_*.log > "$RES/train_logs_tail.txt"; rm -rf "$RES/runs" "$RES"/train_*.log
if [[ -n ${OUT:-} ]]; then tar czf "$OUT/train-smoke.tgz" -C "$RES" .; fi
