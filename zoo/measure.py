"""Timing and peak memory, in one place and one unit (milliseconds, MiB).

On CUDA, times come from CUDA events and memory from ``torch.cuda.max_memory_allocated`` (above
what was allocated before the call); on CPU, wall-clock times and the allocation high-water mark
seen by the PyTorch profiler. Every benchmark of the zoo, the comparison runner and the trainer's
memory estimate use these helpers.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

__all__ = ["cpu_peak_mib", "cuda_peak_mib", "environment", "median_ms", "peak_mib", "time_and_peak", "timings_ms"]


def timings_ms(step: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> list[float]:
    """Milliseconds of each of ``reps`` calls of ``step()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(step: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> float:
    """Median milliseconds of ``step()``."""
    return statistics.median(timings_ms(step, device, reps, warmup))


def cuda_peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak CUDA memory allocated by one ``fn()`` above what was allocated before it (MiB)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def cpu_peak_mib(fn: Callable[[], object]) -> float:
    """Peak CPU memory allocated by tensors during one ``fn()`` (MiB), from the profiler's records."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2**20


def peak_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one ``fn()`` on ``device`` (MiB)."""
    return cuda_peak_mib(fn, device) if device.type == "cuda" else cpu_peak_mib(fn)


def time_and_peak(step: Callable[[], object], device: torch.device, reps: int) -> tuple[float, float]:
    """``(median ms, peak MiB)`` of ``step()``; the first call is an untimed warm-up (it compiles).
    Peak memory is NaN off CUDA (use :func:`cpu_peak_mib` there: the profiler slows the timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    step()
    ms = median_ms(step, device, reps, warmup=1)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else float("nan")
    return ms, peak


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the profiler's native start/stop log lines (C-level stderr) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def environment() -> dict:
    """Versions and hardware, recorded beside every measured number."""
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env
