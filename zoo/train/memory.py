"""Will a training step fit in memory? Measured on two small probes before the first step.

A model's peak memory per step grows linearly in the batch and as ``a L + b L^2`` in the length
(activations, plus the ``L x L`` matrices of quadratic mixers on the reference path). Two probe
steps at ``B = 1`` and ``L = 128, 256`` (the profiler's allocation high-water mark) fix ``a`` and
``b``; the estimate for the real batch and the longest shape, plus weights, gradients and Adam's
two moments, is compared with the memory available. A run that would be killed by the kernel
(the paper-settings ListOps on a 24 GB CPU machine) is refused with the estimate and the fix.
"""

from __future__ import annotations

import os

__all__ = ["MemoryEstimateError", "available_bytes", "check_cpu_memory"]


class MemoryEstimateError(ValueError):
    """The run would not fit in the memory of the device (estimated before the first step)."""


def available_bytes() -> int:
    """Memory a new allocation can use on this machine (``MemAvailable``)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_cpu_memory(model, source, batch_size: int, autocast) -> dict:
    """The estimate (``estimated_gib``, ``available_gib``, ``batch``, ``length``); raises
    :class:`MemoryEstimateError` if it exceeds 90% of the available memory."""
    from zoo.measure import cpu_peak_mib

    L = max(source.shapes())
    probes = [min(L, 128), min(L, 256)]
    peaks = []
    for Lp in probes:
        inputs, masks = source.probe(1, Lp)

        def step():
            with autocast():
                model(inputs, masks).float().sum().backward()

        peaks.append(cpu_peak_mib(step) * 2**20)
    (l1, l2), (m1, m2) = probes, peaks
    if l2 > l1:
        b = max((m2 - m1 * l2 / l1) / (l2 * l2 - l1 * l2), 0.0)
        a = max((m1 - b * l1 * l1) / l1, 0.0)
    else:
        a, b = m1 / l1, 0.0
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    need = batch_size * (a * L + b * L * L) + 4 * params  # activations + weights, grads and Adam moments
    have = available_bytes()
    est = {"estimated_gib": need / 2**30, "available_gib": have / 2**30, "batch": batch_size, "length": L}
    if need > 0.9 * have:
        raise MemoryEstimateError(
            f"this run needs about {need / 2**30:.1f} GiB per training step on the CPU (batch {batch_size}, length "
            f"{L}; measured at B=1, L={l1} and {l2}, extrapolated) but {have / 2**30:.1f} GiB is available: lower "
            "train.batch_size or task.options.max_len, or train on a GPU (train.device=cuda)")
    return est
