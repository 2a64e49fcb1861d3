"""pytest-benchmark suite: forward+backward of every registered layer, by name.

    make bench                                   # CPU, L = 512
    pytest benchmarks --benchmark-enable --benchmark-only --benchmark-group-by=param:length

Layers are parametrised over the registry, so a plugin layer is benchmarked with no edits.
Compare runs with `pytest-benchmark compare`. For GPU sweeps use bench_attention.py / bench_ssm.py.
"""

import pytest
import torch

import registry

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LENGTHS = [512, 2048] if DEVICE == "cuda" else [512]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", registry.list())
def test_fwd_bwd(benchmark, name, length):
    extra = {"max_len": length} if registry.get(name).cls.needs_max_len else {}
    layer = registry.build(name, d_model=128, **extra).to(DEVICE)
    x = torch.randn(2, length, 128, device=DEVICE, requires_grad=True)
    benchmark.extra_info["kernel"] = layer.kernel_name(x)

    def step():
        layer(x).sum().backward()
        if DEVICE == "cuda":
            torch.cuda.synchronize()

    benchmark(step)
