#!/usr/bin/env bash
# The training measurements of docs/training.md on one GPU machine, in one go.
#   usage (GPU machine, repo root, wheels in .whl/):  bash benchmarks/gpu_training.sh [STAGE ...]
#   stages: graphtests tests profile speed epoch grid repro export (default: all but profile, repro and export);
#   results in $RES (default /tmp/results),
#   with $OUT set (the device tool) also packed into $OUT/training.tgz at the end of each stage.
set -uo pipefail
RES=${RES:-/tmp/results}; mkdir -p "$RES"   # outside the repository: a new call re-syncs the working tree
source benchmarks/gpu_env.sh   # wheels, PYTHONPATH, LD_LIBRARY_PATH, ZOO_DATA_CACHE, DATA
stages=${*:-graphtests tests speed epoch grid}
# issue 20's complete runs of listops_paper (docs/results/listops_paper/README.md): which runs, the budget, one eval
# cadence for every run (it picks the test weights, so a committed run of another cadence is refused at export)
REPRO=("only=${REPRO_ONLY:-[vanilla]}" "seeds=${REPRO_SEEDS:-[0]}" "budget.epochs=${REPRO_EPOCHS:-20}")
pack() { [[ -n ${OUT:-} ]] && tar czf "$OUT/training.tgz" --exclude=./repro --exclude=./export -C "$RES" . 2>/dev/null; true; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$RES/env.txt" 2>&1

if [[ ! -f $DATA/listops-1000/basic_train.tsv ]]; then   # real-size ListOps (96k/2k/2k), generated offline
  /usr/bin/time -f "%e s" python3 -m zoo data generate listops --out "$DATA" --no-progress > "$RES/generate.txt" 2>&1
fi

for stage in $stages; do
  echo "== $stage $(date +%T)" >> "$RES/stages.txt"
  case $stage in
    graphtests)   # the captured step against the eager one, the fused block compiled against eager (two minutes)
      timeout 400 python3 -m pytest -q -p no:cacheprovider tests/test_graphs.py tests/test_fused.py > "$RES/graph_tests.txt" 2>&1 ;;
    tests)   # every GPU test: backends (the padding-free xformers path, flex with small heads) and the trainer
      timeout 420 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention.py tests/test_fftconv.py \
        > "$RES/gpu_tests.txt" 2>&1
      timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_train.py > "$RES/train_tests_gpu.txt" 2>&1 ;;
    profile) # where the step's GPU time goes (the kernels of the captured step, run eagerly under the profiler)
      timeout 600 python3 benchmarks/profile_step.py --out "$RES/profile" --set "data.root=$DATA" \
        > "$RES/profile.log" 2>&1 ;;
    speed)   # steady-state step time of every layer, one process
      timeout 1500 python3 benchmarks/train_speed.py --steps 300 --out "$RES/train_speed" \
        --set "data.root=$DATA" > "$RES/train_speed.log" 2>&1 ;;
    epoch)   # one full epoch of vanilla, validation included
      timeout 900 python3 benchmarks/train_speed.py --layers --eager --epoch vanilla --out "$RES/epoch" \
        --set "data.root=$DATA" > "$RES/epoch.log" 2>&1 ;;
    grid)    # the same three runs concurrently on the GPU, then one at a time
      for per in 3 1; do
        /usr/bin/time -f "%e s wall" timeout 1500 python3 -m zoo compare listops_paper "layers=[vanilla,las,s4d]" \
          "seeds=[0]" budget.steps=300 execution.runs_per_gpu=$per "overrides=['data.root=$DATA','train.eval_every=100']" \
          --out "$RES/grid_per_gpu_$per" > "$RES/grid_per_gpu_$per.log" 2>&1
        rm -rf "$RES/grid_per_gpu_$per"/listops_paper/runs/*/checkpoint*.pt "$RES/grid_per_gpu_$per"/listops_paper/runs/*/best.pt
      done ;;
    repro)   # REPRO_ONLY x REPRO_SEEDS for REPRO_EPOCHS epochs, REPRO_PER_GPU runs per GPU (default 1: sharing a GPU
             # adds no throughput, docs/training.md); long: start it with setsid in the background, then poll
      timeout "${REPRO_TIMEOUT:-1680}" python3 -m zoo compare listops_paper "${REPRO[@]}" \
        execution.runs_per_gpu="${REPRO_PER_GPU:-1}" \
        "overrides=['data.root=$DATA','train.eval_every=${REPRO_EVAL_EVERY:-1000}']" --no-progress --out "$RES/repro" \
        > "$RES/repro.log" 2>&1
      rm -f "$RES"/repro/listops_paper/runs/*/checkpoint*.pt "$RES"/repro/listops_paper/runs/*/best.pt ;;
    export)  # the FINISHED repro runs in committed form (summary, config, thinned metrics; no checkpoints)
             # -> $OUT/listops_paper_runs.tgz, merged here by `zoo compare listops_paper --export docs/results`
      rm -rf "$RES/export"
      python3 -m zoo compare listops_paper "${REPRO[@]}" --export "$RES/export" --out "$RES/repro" > "$RES/export.log" 2>&1
      cat "$RES/export.log"
      [[ -n ${OUT:-} && -d $RES/export/listops_paper ]] && tar czf "$OUT/listops_paper_runs.tgz" -C "$RES/export" listops_paper ;;
  esac
  pack
done
echo "== done $(date +%T)" >> "$RES/stages.txt"
pack
