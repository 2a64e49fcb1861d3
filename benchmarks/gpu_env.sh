# Sourced by the GPU scripts (gpu_fused.sh, gpu_training.sh) on the device machine, repo root: the
# xformers / omegaconf wheels from .whl/ installed once into $SITE, the paths, the data cache.
SITE=/tmp/site
[[ -d $SITE/xformers ]] || python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl >/dev/null 2>&1
export PYTHONPATH="$PWD:$SITE:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 KINETO_LOG_LEVEL=5
export LD_LIBRARY_PATH="$SITE/nvidia/cuda_runtime/lib:${LD_LIBRARY_PATH:-}"
export ZOO_DATA_CACHE=/tmp/zoo-cache
DATA=/tmp/lra
