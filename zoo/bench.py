"""Speed and memory of registered layers side by side (``zoo bench``).

Every layer is built by name (its ``configs/layers`` YAML plus overrides, resolved once), run
forward + backward on random inputs at each length, and reported in one table: the median time
with its spread (so a noisy CPU figure looks noisy), peak memory, the ratio to ``vanilla``
measured in the same process, the kernel used and the error against the layer's materialised
reference. An out-of-memory result is a data point ("OOM"), not a crash. The naive,
materialised LaS operator (``las`` through ``backend=reference``) is a baseline row.

Runs are saved in pytest-benchmark's JSON format and storage layout (``--save NAME`` writes
``STORAGE/<machine id>/NNNN_NAME.json``), so ``zoo bench --compare OLD NEW`` (or
``pytest-benchmark --storage STORAGE compare``) shows what changed.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

import registry
from zoo.config import resolve_layer
from zoo.measure import environment, peak_mib, timings_ms

__all__ = ["BASELINE", "Row", "compare_runs", "default_layers", "format_markdown", "fwd_bwd_step", "format_table",
           "load_run", "measure", "plot", "save", "save_benchmark_run"]

#: the materialised LaS operator: every L x L matrix built (the definition, and the cost to beat)
BASELINE = ("las[materialised]", "las", ["backend=reference"])


@dataclass
class Row:
    layer: str
    length: int
    params: int
    ms: float | None
    spread_pct: float | None
    peak_mib: float | None
    ratio: float | None
    kernel: str
    rel_err: float | None
    note: str = ""
    times_ms: list = field(default_factory=list)


def reference_error(layer, x) -> float | None:
    """max |forward - reference_forward| / max |reference_forward|, or None without a reference."""
    with torch.no_grad():
        try:
            ref = layer.reference_forward(x).float()
        except NotImplementedError:
            return None
        out = layer(x).float()
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def _spread(times: list[float]) -> float:
    """Half the inter-quartile range, as a percentage of the median."""
    if len(times) < 2:
        return float("nan")
    q = statistics.quantiles(times, n=4, method="inclusive")
    return 50.0 * (q[2] - q[0]) / statistics.median(times)


def fwd_bwd_step(name: str, length: int, overrides: Iterable[str] = (), *, batch: int = 2, d_model: int = 512,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, max_len: int | None = None):
    """``(layer, x, step)``: the layer by name (its ``configs/layers`` YAML plus overrides, resolved once),
    a random ``(batch, length, d_model)`` input and one forward + backward of it, the unit that both
    ``zoo bench`` and the pytest-benchmark suite (``benchmarks/test_bench_layers.py``) time."""
    layer = resolve_layer(name, list(overrides), d_model=d_model, max_len=max_len or length).build()
    layer = layer.to(device=device, dtype=dtype)
    x = torch.randn(batch, length, d_model, device=device, dtype=dtype, requires_grad=True)  # (B, L, D)

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).float().sum().backward()

    return layer, x, step


def measure(layers: Sequence[str], lengths: Sequence[int], *, batch: int = 2, d_model: int = 512,
            device: str = "cpu", dtype: torch.dtype = torch.float32, reps: int = 3, overrides: Iterable[str] = (),
            baseline: bool = True, progress: bool = True) -> list[Row]:
    """Measure every layer at every length; a layer that fails reports why and the rest go on."""
    import sys

    from tqdm import tqdm

    dev = torch.device(device)
    rows: list[Row] = []
    jobs = [(n, n, []) for n in layers] + ([BASELINE] if baseline and "las" in registry.list() else [])
    todo = [(job, L) for L in lengths for job in jobs]
    bar = tqdm(todo, desc="bench", disable=not progress or not sys.stderr.isatty(), leave=False)
    for (label, name, extra), L in bar:
        bar.set_postfix_str(f"{label} L={L}")
        torch.manual_seed(0)
        try:
            layer, x, step = fwd_bwd_step(name, L, [*overrides, *extra], batch=batch, d_model=d_model, device=dev,
                                          dtype=dtype, max_len=max(lengths))
            kernel = layer.kernel_name(x)
            times = timings_ms(step, dev, reps, warmup=1)
            peak = peak_mib(step, dev)
            err = None if extra else reference_error(layer, x)  # the baseline row IS the reference
            params = sum(p.numel() for p in layer.parameters())
            rows.append(Row(label, L, params, statistics.median(times), _spread(times), peak, None, kernel, err,
                            times_ms=times))
        except torch.OutOfMemoryError:
            rows.append(Row(label, L, 0, None, None, None, None, "-", None, note="OOM"))
        except Exception as exc:  # report and continue: one broken layer must not hide the rest
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            rows.append(Row(label, L, 0, None, None, None, None, "-", None, note=msg[:120]))
        finally:
            layer = x = None
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


HEADER = ("layer", "L", "params", "fwd+bwd ms", "+/-", "peak MiB", "x vanilla", "kernel", "rel err vs ref", "note")


def table_rows(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    return [
        (r.layer, str(r.length), f"{r.params:,}", _fmt(r.ms, ".2f"), _fmt(r.spread_pct, ".0f") + "%" if r.ms else "-",
         _fmt(r.peak_mib, ".1f"), _fmt(r.ratio, ".2f"), r.kernel, _fmt(r.rel_err, ".1e"), r.note)
        for r in rows
    ]


def format_table(rows: Sequence[Row], header=HEADER, body=None) -> str:
    """Aligned plain-text table (numbers right-aligned)."""
    body = body if body is not None else table_rows(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    right = {i for i, h in enumerate(header) if h not in ("layer", "kernel", "note")}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(b) for b in body)])


def format_markdown(rows: Sequence[Row], header=HEADER, body=None) -> str:
    body = body if body is not None else table_rows(rows)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out)


def plot(rows: Sequence[Row], path: Path) -> None:
    """Scaling curves: fwd+bwd time (with its spread) and peak memory against L, one line per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r.layer for r in rows):
        pts = [r for r in rows if r.layer == name and r.ms]
        if not pts:
            continue
        Ls = [r.length for r in pts]
        axes[0].errorbar(Ls, [r.ms for r in pts], yerr=[r.ms * (r.spread_pct or 0) / 100 for r in pts], marker="o",
                         capsize=2, label=name)
        axes[1].plot(Ls, [r.peak_mib for r in pts], marker="o", label=name)
    for ax, ylabel in zip(axes, ("fwd+bwd time (ms), median +/- half IQR", "peak memory (MiB)")):
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
    """``bench.md``, ``bench.json`` and ``bench.png`` in ``out``."""
    from zoo._io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    atomic_write_text(out / "bench.json", json.dumps({"command": command, "env": env,
                                                      "rows": [asdict(r) for r in rows]}, indent=2))
    atomic_write_text(out / "bench.md", f"Command: `{command}`\n\nEnvironment: "
                      f"{', '.join(f'{k} {v}' for k, v in env.items())}\n\n" + format_markdown(rows) + "\n")
    plot(rows, out / "bench.png")
    return [out / "bench.md", out / "bench.json", out / "bench.png"]


# --------------------------------------------------------------------------- pytest-benchmark runs


def _benchmark_json(rows: Sequence[Row], command: str, options: dict) -> dict:
    import pytest_benchmark
    from pytest_benchmark.stats import Stats
    from pytest_benchmark.utils import get_commit_info

    benchmarks, failed = [], []
    for r in rows:
        params = {"layer": r.layer, "length": r.length}
        if not r.times_ms:
            failed.append({**params, "note": r.note})
            continue
        stats = Stats()
        for t in r.times_ms:
            stats.update(t / 1e3)  # pytest-benchmark counts seconds
        benchmarks.append({
            "group": f"L={r.length}", "name": f"{r.layer}[{r.length}]", "fullname": f"zoo bench::{r.layer}[{r.length}]",
            "params": params, "param": f"{r.layer}-{r.length}", "options": options,
            "extra_info": {"peak_mib": r.peak_mib, "kernel": r.kernel, "rel_err": r.rel_err, "params": r.params},
            "stats": {**stats.as_dict(), "iterations": 1, "data": list(stats.data)},
        })
    return {"machine_info": {**environment(), "node": __import__("platform").node()},
            "commit_info": get_commit_info(), "benchmarks": benchmarks, "failed": failed, "command": command,
            "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": pytest_benchmark.__version__}


def save_benchmark_run(rows: Sequence[Row], storage: Path, name: str, command: str, options: dict) -> Path:
    """Save ``rows`` as a pytest-benchmark run ``STORAGE/<machine id>/NNNN_<name>.json``; returns its path."""
    from pytest_benchmark.logger import Logger
    from pytest_benchmark.storage.file import FileStorage
    from pytest_benchmark.utils import get_machine_id

    fs = FileStorage(storage, logger=Logger(Logger.QUIET), default_machine_id=get_machine_id())
    before = set(fs.query())
    fs.save(_benchmark_json(rows, command, options), name)
    (new,) = set(fs.query()) - before
    return Path(new)


def load_run(storage: Path, name_or_path: str) -> tuple[Path, dict]:
    """A saved run by path, by name (``NNNN_name`` or ``name``; the latest match) or by number."""
    p = Path(name_or_path)
    if p.is_file():
        return p, json.loads(p.read_text())
    matches = sorted(Path(storage).glob(f"*/*{name_or_path}*.json"), key=lambda q: q.name)
    if not matches:
        runs = ", ".join(q.stem for q in sorted(Path(storage).glob("*/*.json"))) or "none"
        raise FileNotFoundError(f"no saved benchmark run {name_or_path!r} in {storage} (saved: {runs}); "
                                "save one with `zoo bench ... --save NAME`")
    return matches[-1], json.loads(matches[-1].read_text())


def compare_runs(old: dict, new: dict, threshold_pct: float = 10.0) -> tuple[tuple, list[tuple[str, ...]], int]:
    """``(header, rows, regressions)``: per (layer, L) the medians, NEW/OLD and a verdict.

    A change counts as a regression (or an improvement) only when it exceeds both ``threshold_pct``
    and the two runs' combined spread (half IQRs): noise is called noise.
    """
    def index(run):
        return {(b["params"]["layer"], b["params"]["length"]): b["stats"] for b in run["benchmarks"]}

    a, b = index(old), index(new)
    header = ("layer", "L", "old ms", "new ms", "new/old", "noise", "verdict")
    out, regressions = [], 0
    for key in sorted(set(a) | set(b), key=lambda k: (k[1], k[0])):
        if key not in a or key not in b:
            out.append((key[0], str(key[1]), _ms(a.get(key)), _ms(b.get(key)), "-", "-",
                        "new" if key not in a else "gone"))
            continue
        ma, mb = a[key]["median"], b[key]["median"]
        noise = 50.0 * (a[key]["iqr"] / ma + b[key]["iqr"] / mb)
        change = 100.0 * (mb / ma - 1.0)
        limit = max(threshold_pct, noise)
        verdict = "REGRESSION" if change > limit else ("faster" if change < -limit else "same (within noise)")
        regressions += verdict == "REGRESSION"
        out.append((key[0], str(key[1]), f"{ma * 1e3:.2f}", f"{mb * 1e3:.2f}", f"{mb / ma:.2f}", f"{noise:.0f}%",
                    verdict))
    return header, out, regressions


def _ms(stats) -> str:
    return f"{stats['median'] * 1e3:.2f}" if stats else "-"


def default_layers() -> list[str]:
    names = registry.list()
    return (["vanilla"] if "vanilla" in names else []) + [n for n in names if n != "vanilla"]
