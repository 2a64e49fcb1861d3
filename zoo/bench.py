"""Side-by-side comparison of registered layers: time, peak memory, kernel, error vs reference.

Every layer is built by name from ``configs/layers`` (plus overrides), run forward + backward on
random inputs at a few lengths, and reported in one table (ratios to ``vanilla`` are measured in
the same process). On CUDA, times come from CUDA events and memory from
``torch.cuda.max_memory_allocated``; on CPU, wall-clock medians and the allocation high-water
mark seen by the PyTorch profiler.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

import registry
from zoo.configs import layer_config


@dataclass
class Row:
    layer: str
    length: int
    params: int
    ms: float | None
    peak_mib: float | None
    ratio: float | None
    kernel: str
    rel_err: float | None
    note: str = ""


def time_fwd_bwd(layer, x, reps: int, warmup: int = 1) -> float:
    """Median milliseconds of one forward + backward."""

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).float().sum().backward()

    return median_ms(step, x.device, reps, warmup)


def median_ms(step, device: torch.device, reps: int, warmup: int = 1) -> float:
    """Median milliseconds of ``step()`` (CUDA events on GPU, wall clock on CPU)."""
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
    return statistics.median(times)


def time_and_peak(step, device: torch.device, reps: int) -> tuple[float, float]:
    """``(median ms, peak GiB above the starting allocation)`` of ``step()``; the first call is
    an untimed warm-up (it compiles). Peak memory is NaN off CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    step()
    ms = median_ms(step, device, reps, warmup=1)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else float("nan")
    return ms, peak


def cuda_peak_mib(fn, device: torch.device) -> float:
    """Peak CUDA memory allocated by one ``fn()`` above what was allocated before it (MiB)."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def peak_memory_mib(layer, x) -> float:
    """Peak extra memory of one forward + backward (MiB)."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    if x.device.type == "cuda":
        return cuda_peak_mib(lambda: layer(x).float().sum().backward(), x.device)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        layer(x).float().sum().backward()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2**20


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


def reference_error(layer, x) -> float | None:
    """max |forward - reference_forward| / max |reference_forward|, or None without a reference."""
    with torch.no_grad():
        try:
            ref = layer.reference_forward(x).float()
        except NotImplementedError:
            return None
        out = layer(x).float()
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def compare(
    layers: Sequence[str],
    lengths: Sequence[int],
    *,
    batch: int = 2,
    d_model: int = 64,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    reps: int = 3,
    overrides: Iterable[str] = (),
    progress: bool = True,
) -> list[Row]:
    """Measure every layer at every length; a layer that fails reports why and the rest go on."""
    from tqdm import tqdm

    dev = torch.device(device)
    rows: list[Row] = []
    jobs = [(n, L) for L in lengths for n in layers]
    bar = tqdm(jobs, desc="compare", disable=not progress, leave=False)
    for name, L in bar:
        bar.set_postfix_str(f"{name} L={L}")
        cfg = layer_config(name, [f"d_model={d_model}", *overrides])
        entry = registry.get(cfg.name)
        if entry.cls.needs_max_len:
            cfg.max_len = max(lengths)
        torch.manual_seed(0)
        try:
            layer = registry.build(cfg).to(device=dev, dtype=dtype)
            x = torch.randn(batch, L, d_model, device=dev, dtype=dtype, requires_grad=True)
            params = sum(p.numel() for p in layer.parameters())
            kernel = layer.kernel_name(x)
            ms = time_fwd_bwd(layer, x, reps)
            peak = peak_memory_mib(layer, x)
            err = reference_error(layer, x)
            rows.append(Row(name, L, params, ms, peak, None, kernel, err))
        except Exception as exc:  # report and continue: one broken layer must not hide the rest
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            rows.append(Row(name, L, 0, None, None, None, "-", None, note=msg[:120]))
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    base = {r.length: r.ms for r in rows if r.layer == "vanilla" and r.ms}
    for r in rows:
        if r.ms and base.get(r.length):
            r.ratio = r.ms / base[r.length]
    return rows


def _fmt(v, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return format(v, spec)


HEADER = ("layer", "L", "params", "fwd+bwd ms", "peak MiB", "x vanilla", "kernel", "rel err vs ref", "note")


def table_rows(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    return [
        (r.layer, str(r.length), f"{r.params:,}", _fmt(r.ms, ".2f"), _fmt(r.peak_mib, ".1f"), _fmt(r.ratio, ".2f"),
         r.kernel, _fmt(r.rel_err, ".1e"), r.note)
        for r in rows
    ]


def format_table(rows: Sequence[Row]) -> str:
    """Aligned plain-text table (numbers right-aligned)."""
    body = table_rows(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(HEADER)]
    right = {1, 2, 3, 4, 5, 7}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *(line(b) for b in body)])


def format_markdown(rows: Sequence[Row]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(b) + " |" for b in table_rows(rows)]
    return "\n".join(out)


def environment() -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


def plot(rows: Sequence[Row], path: Path) -> None:
    """Scaling curves: fwd+bwd time and peak memory against L, one line per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r.layer for r in rows):
        pts = [(r.length, r.ms, r.peak_mib) for r in rows if r.layer == name and r.ms]
        if not pts:
            continue
        Ls, ms, mem = zip(*pts)
        axes[0].plot(Ls, ms, marker="o", label=name)
        axes[1].plot(Ls, mem, marker="o", label=name)
    for ax, ylabel in zip(axes, ("fwd+bwd time (ms)", "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(rows: Sequence[Row], out: Path, command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    (out / "compare.json").write_text(json.dumps({"command": command, "env": env, "rows": [asdict(r) for r in rows]}, indent=2))
    (out / "compare.md").write_text(
        f"Command: `{command}`\n\nEnvironment: {', '.join(f'{k} {v}' for k, v in env.items())}\n\n" + format_markdown(rows) + "\n"
    )
    plot(rows, out / "compare.png")
    return [out / "compare.md", out / "compare.json", out / "compare.png"]


def default_layers() -> list[str]:
    names = registry.list()
    return (["vanilla"] if "vanilla" in names else []) + [n for n in names if n != "vanilla"]


__all__ = ["Row", "compare", "default_layers", "format_markdown", "format_table", "save"]
