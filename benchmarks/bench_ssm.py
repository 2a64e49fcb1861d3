"""S4D kernel generation + FFT convolution: chunked fast path vs the materialised Vandermonde.

    python benchmarks/bench_ssm.py --out runs/bench_ssm            # CUDA sweep, L = 1K .. 64K
    python benchmarks/bench_ssm.py --out /tmp/bench --quick        # seconds, any device (a smoke test)

For each length L (B = tokens / L sequences, H channels, N state size), in one process:

* ``fast``:  ``zoo.functional.ssm.s4d_kernel`` (z^l = z^(m c) z^j: one batched GEMM of two
  O(H N/2 sqrt(L)) factors) + ``fftconv``;
* ``naive``: ``s4d_kernel_reference`` (materialises the (H, N/2, L) complex Vandermonde tensor,
  autograd keeps it) + the same ``fftconv``;

timed forward + backward (median of ``--reps`` runs after warm-up; CUDA events on GPU, wall clock
on CPU), with the peak memory of one forward + backward above the inputs
(``torch.cuda.max_memory_allocated``). An OOM is reported as "OOM".

FFT convolution bandwidth: the forward ``fftconv(u, k)`` alone, against the bytes an ideal fused
convolution must move: read ``u`` (B H L x input bytes), read ``k`` (H L x 4, float32), write ``y``
(B H L x input bytes). Achieved bytes/s are reported as a fraction of the copy bandwidth measured
in the same process (``dst.copy_(src)`` of a large buffer: read + write = 2 x its bytes).

Writes ``bench_ssm.md`` and ``bench_ssm.json`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from zoo.functional.fftconv import fftconv  # noqa: E402
from zoo.functional.ssm import log_dt_init, s4d_kernel, s4d_kernel_reference, s4d_lin_init  # noqa: E402
from zoo.measure import cuda_peak_mib, median_ms  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------- measuring


def peak_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak CUDA memory of one ``fn()`` in MiB (zoo.measure); None on the CPU, where it is not timed here."""
    return cuda_peak_mib(fn, device) if device.type == "cuda" else None


def copy_bandwidth(device: torch.device, nbytes: int, reps: int, warmup: int) -> float:
    """Device-to-device copy bandwidth in bytes/s (each copy reads and writes ``nbytes``)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, reps, warmup)
    return 2 * src.numel() * 4 / (ms * 1e-3)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------- the cases


def make_inputs(B: int, H: int, N: int, L: int, dtype: torch.dtype, device: torch.device):
    g = torch.Generator().manual_seed(0)
    log_A_real, A_imag = s4d_lin_init(H, N)
    params = [
        log_dt_init(H, 1e-3, 1e-1, generator=g),
        log_A_real,
        A_imag,
        torch.view_as_real(torch.randn(H, N // 2, dtype=torch.cfloat, generator=g)),
    ]
    params = [p.to(device).requires_grad_() for p in params]
    u = torch.randn(B, H, L, generator=g).to(device=device, dtype=dtype).requires_grad_()
    dy = torch.randn(B, H, L, generator=g).to(device=device, dtype=dtype)
    return params, u, dy


def fwd_bwd(kernel_fn, params, u, dy, L: int) -> Callable[[], None]:
    def run() -> None:
        k = kernel_fn(*params, L)  # (H, L) fp32
        y = fftconv(u, k, causal=True)  # (B, H, L)
        torch.autograd.backward(y, dy, inputs=[*params, u])
        for t in (*params, u):
            t.grad = None

    return run


def bench_length(L: int, args, device: torch.device, dtype: torch.dtype, copy_bps: float) -> dict:
    B = max(1, args.tokens // L)
    row: dict = {"L": L, "B": B, "H": args.channels, "N": args.state}
    params, u, dy = make_inputs(B, args.channels, args.state, L, dtype, device)
    for name, fn in (("fast", s4d_kernel), ("naive", s4d_kernel_reference)):
        try:
            step = fwd_bwd(fn, params, u, dy, L)
            row[f"{name}_ms"] = median_ms(step, device, args.reps, args.warmup)
            row[f"{name}_peak_mib"] = peak_mib(step, device)
        except (RuntimeError, MemoryError) as exc:
            if not _is_oom(exc):
                raise
            row[f"{name}_ms"] = row[f"{name}_peak_mib"] = "OOM"
            if device.type == "cuda":
                torch.cuda.empty_cache()
    # FFT convolution alone (forward), against an ideal fused conv's bytes
    with torch.no_grad():
        k = s4d_kernel(*[p.detach() for p in params], L)  # (H, L) fp32
        ud = u.detach()
        # the kernel bound now, not read from this scope (a closure over ``k`` saw the ``del k`` below)
        conv_ms = median_ms(functools.partial(fftconv, ud, k, causal=True), device, args.reps, args.warmup)
    io_bytes = 2 * ud.numel() * ud.element_size() + k.numel() * k.element_size()
    row["conv_fwd_ms"] = conv_ms
    row["conv_ideal_bytes"] = io_bytes
    row["conv_GBps"] = io_bytes / (conv_ms * 1e-3) / 1e9
    row["conv_frac_of_copy"] = io_bytes / (conv_ms * 1e-3) / copy_bps
    del params, u, ud, dy, k, step  # ud and step (a closure) hold u too: without them empty_cache() keeps u
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# --------------------------------------------------------------------------- output


def _fmt(v, spec: str) -> str:
    if v is None:
        return "n/a"
    return v if isinstance(v, str) else format(v, spec)


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# S4D kernel generation + FFT convolution (forward + backward)",
        "",
        f"- device: {meta['device_name']}; torch {meta['torch']}; input dtype {meta['dtype']}",
        f"- command: `{meta['command']}`",
        f"- H = {meta['channels']} channels, N = {meta['state']} state, B x L = {meta['tokens']} tokens; "
        f"medians of {meta['reps']} runs",
        f"- copy bandwidth (same process): {meta['copy_GBps']:.1f} GB/s; "
        "FFT conv bytes = read u + read k (fp32) + write y",
        "",
        "| L | B | fast ms | naive ms | speed-up | fast peak MiB | naive peak MiB | conv fwd ms | conv GB/s "
        "| of copy BW |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fast, naive = r["fast_ms"], r["naive_ms"]
        speedup = naive / fast if isinstance(fast, float) and isinstance(naive, float) else None
        lines.append(
            f"| {r['L']} | {r['B']} | {_fmt(fast, '.3f')} | {_fmt(naive, '.3f')} | {_fmt(speedup, '.2f')} | "
            f"{_fmt(r['fast_peak_mib'], '.1f')} | {_fmt(r['naive_peak_mib'], '.1f')} | {r['conv_fwd_ms']:.3f} | "
            f"{r['conv_GBps']:.1f} | {r['conv_frac_of_copy']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for bench_ssm.md and bench_ssm.json")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few runs: seconds on a CPU (a smoke test)")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (default 1K 4K 16K 64K)")
    p.add_argument("--tokens", type=int, default=None, help="B x L per measurement (default 65536)")
    p.add_argument("--channels", type=int, default=None, help="H (default 256)")
    p.add_argument("--state", type=int, default=None, help="N, even (default 64)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="dtype of u and y (the FFT is fp32)")
    p.add_argument("--reps", type=int, default=None, help="timed runs (default 20; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 5; quick 1)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = p.parse_args(argv)
    quick = {"lengths": [64, 256], "tokens": 512, "channels": 8, "state": 8, "reps": 3, "warmup": 1}
    full = {"lengths": [1024, 4096, 16384, 65536], "tokens": 65536, "channels": 256, "state": 64, "reps": 20,
            "warmup": 5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.state < 2 or args.state % 2:
        p.error(f"--state must be even and >= 2, got {args.state}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    if not args.quick and device.type != "cuda":
        print("bench_ssm: no CUDA device; timings on CPU are not comparable (use --quick for a smoke test)",
              file=sys.stderr)
    copy_bytes = (1 << 20) * (16 if args.quick else 1024)
    copy_bps = copy_bandwidth(device, copy_bytes, args.reps, args.warmup)
    rows = [bench_length(L, args, device, dtype, copy_bps) for L in args.lengths]
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()})"
    command = [Path(sys.executable).name, *sys.argv] if argv is None else ["bench_ssm.py", *argv]
    meta = {
        "device_name": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "command": shlex.join(command),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dtype": args.dtype,
        "channels": args.channels,
        "state": args.state,
        "tokens": args.tokens,
        "reps": args.reps,
        "copy_GBps": copy_bps / 1e9,
        "conv_bytes": "read u (B*H*L*itemsize) + read k (H*L*4) + write y (B*H*L*itemsize)",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(meta, rows)
    (out / "bench_ssm.md").write_text(table)
    (out / "bench_ssm.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
