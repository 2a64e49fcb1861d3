"""pytest-benchmark suite: forward+backward of every registered layer, by name.

    make bench                                   # CPU, L = 512
    pytest benchmarks --benchmark-enable --benchmark-only --benchmark-group-by=param:length

Layers are parametrised over the registry, so a plugin layer is benchmarked with no edits. The
step timed is ``zoo.bench.fwd_bwd_step``, the same one ``zoo bench`` times (one definition of what
"a layer's speed" means; see benchmarks/README.md). Compare runs with `pytest-benchmark compare`.
For GPU sweeps use bench_attention.py / bench_ssm.py.
"""

import pytest
import torch

import registry
from zoo.bench import fwd_bwd_step

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LENGTHS = [512, 2048] if DEVICE == "cuda" else [512]
NAMES = registry.list()
assert NAMES, "the layer registry is empty: nothing to benchmark (is zoo installed?)"


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", NAMES)
def test_fwd_bwd(benchmark, name, length):
    layer, x, step = fwd_bwd_step(name, length, batch=2, d_model=128, device=DEVICE)
    benchmark.extra_info["kernel"] = layer.kernel_name(x)

    def timed():
        step()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark(timed)
