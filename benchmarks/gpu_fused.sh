#!/usr/bin/env bash
# Issue 19's measurements in ONE device call (under ~9.5 minutes; each stage bounded by what is left):
#   GPU tests of the fused block and the graphed step / eval (while ListOps is generated on the CPU),
#   step time of vanilla, las, s4d, long_conv (+ vanilla with every compiled function eager, same process),
#   the vanilla step's kernels, one vanilla epoch with graphed evaluation.
#   usage (GPU machine, repo root, wheels in .whl/): bash benchmarks/gpu_fused.sh   (results in $OUT or /tmp/results)
#   EXTRA_TESTS='tests/test_attention.py ...' adds GPU tests to the first stage (TESTS_TIMEOUT bounds it);
#   EPOCH=0 skips the epoch stage; PROFILE_LAYERS (default vanilla) picks the profiled layers;
#   FLEX=1 adds benchmarks/bench_flex.py (FlexAttention's kernel options, default against autotuned).
set -uo pipefail
RES=${OUT:-/tmp/results}; mkdir -p "$RES"
T0=$SECONDS; BUDGET=${BUDGET:-560}
left() { echo $(( BUDGET - (SECONDS - T0) )); }
source benchmarks/gpu_env.sh   # wheels, PYTHONPATH, LD_LIBRARY_PATH, ZOO_DATA_CACHE, DATA
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$RES/env.txt" 2>&1
stage() { echo "== $1 at $((SECONDS - T0)) s" >> "$RES/stages.txt"; }

stage generate+tests
( /usr/bin/time -f "%e s" python3 -m zoo data generate listops --out "$DATA" --no-progress > "$RES/generate.txt" 2>&1 ) &
GEN=$!
timeout ${TESTS_TIMEOUT:-240} python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_fused.py tests/test_graphs.py \
  ${EXTRA_TESTS:-} > "$RES/gpu_tests.txt" 2>&1
wait $GEN
stage speed
RESERVE=$(( (${EPOCH:-1} == 1 ? 150 : 50) + (${FLEX:-0} == 1 ? 100 : 0) ))
timeout $(( $(left) - RESERVE )) python3 benchmarks/train_speed.py --layers vanilla las s4d long_conv --steps 150 --eager \
  --unfused vanilla --out "$RES/train_speed" --set "data.root=$DATA" > "$RES/train_speed.log" 2>&1
stage profile
PT=$(( ${EPOCH:-1} == 1 ? ($(left) - 80 < 90 ? $(left) - 80 : 90) : $(left) - 5 - (${FLEX:-0} == 1 ? 100 : 0) ))
timeout $PT python3 benchmarks/profile_step.py --layers ${PROFILE_LAYERS:-vanilla} \
  --out "$RES/profile" --set "data.root=$DATA" > "$RES/profile.log" 2>&1
stage flex
[[ ${FLEX:-0} == 1 ]] && timeout $(( $(left) - (${EPOCH:-1} == 1 ? 80 : 5) )) python3 benchmarks/bench_flex.py \
  --out "$RES/flex" > "$RES/flex.log" 2>&1
stage epoch
[[ ${EPOCH:-1} == 1 ]] && timeout $(left) python3 benchmarks/train_speed.py --layers --eager --epoch vanilla --graphed-eval --out "$RES/epoch" \
  --set "data.root=$DATA" > "$RES/epoch.log" 2>&1
stage done
tail -n 3 "$RES/gpu_tests.txt"; cat "$RES/stages.txt" "$RES/generate.txt"; tail -n 12 "$RES/train_speed/train_speed.md" "$RES/epoch/train_speed.md" "$RES/flex/flex.md" 2>/dev/null
