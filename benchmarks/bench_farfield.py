"""Far-field shortcut vs exact FlexAttention LaS: fwd+bwd time, peak memory, achieved error.

    python benchmarks/bench_farfield.py --out docs/results/farfield [--quick] [--causal]

On CUDA: H=8, d=64, bf16, alphas = [0] + log-spaced 0.01..0.5, B x L = 16 x 4K, 4 x 16K, 1 x 64K
(B L = 64K tokens each), `farfield_attention` at each delta vs
`attention(q, k, v, decay=..., backend="flex")`; then the max relative error of both against the
fp32 reference (`attention_reference`) at L = 4K (B = 1), next to the a-priori bound
`farfield_error_bound`. Writes ``farfield.md`` and ``farfield.json``.

``--quick`` runs tiny sizes on CPU in fp32, FORWARD ONLY under no_grad (FlexAttention has no CPU
backward): a smoke test of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import torch

from zoo.experimental.farfield import farfield_attention, farfield_error_bound, farfield_reference
from zoo.functional.attention import attention, attention_reference
from zoo.measure import environment, time_and_peak


def alphas(H: int, device) -> torch.Tensor:
    rest = torch.logspace(math.log10(0.01), math.log10(0.5), H - 1, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), rest]).to(device, torch.float32)


def measure(fn, q, k, v, device, reps, backward):
    def step():
        if backward:
            for t in (q, k, v):
                t.grad = None
            fn(q, k, v).float().sum().backward()
        else:
            with torch.no_grad():
                fn(q, k, v)

    return time_and_peak(step, device, reps)


def rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def errors(device, dtype, H, d, L, deltas, causal):
    """Max relative error vs the fp32 exact reference (B = 1), plus the a-priori bound relative to max|ref|."""
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, H, L, d, generator=g).to(device) for _ in range(3))
    a = alphas(H, device)
    ref = attention_reference(q, k, v, decay=a, causal=causal)
    rows = []
    with torch.no_grad():
        exact = attention(q.to(dtype), k.to(dtype), v.to(dtype), decay=a, causal=causal, backend="flex")
    rows.append(dict(method="exact flex", dtype=str(dtype).replace("torch.", ""), delta=None, rel_err=rel(exact, ref),
                     rel_bound=0.0))
    for delta in deltas:
        bound = farfield_error_bound(delta, v) / ref.abs().max().item()
        formula = farfield_reference(q, k, v, decay=a, delta=delta, causal=causal)
        rows.append(dict(method="farfield_reference", dtype="float32", delta=delta, rel_err=rel(formula, ref),
                         rel_bound=bound))
        for dt in dict.fromkeys([dtype, torch.float32]):
            with torch.no_grad():
                out = farfield_attention(q.to(dt), k.to(dt), v.to(dt), decay=a, delta=delta, causal=causal)
            rows.append(dict(method="farfield_attention", dtype=str(dt).replace("torch.", ""), delta=delta,
                             rel_err=rel(out, ref), rel_bound=bound))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--deltas", default="1e-3,1e-2")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    backward = device.type == "cuda"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = [(1, 256), (1, 512)] if args.quick else [(16, 4096), (4, 16384), (1, 65536)]
    H, d = (4, 16) if args.quick else (8, 64)
    err_L = 256 if args.quick else 4096
    reps = 2 if args.quick else args.reps
    deltas = [float(x) for x in args.deltas.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    a = alphas(H, device)

    timing = []
    for B, L in shapes:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(B, H, L, d, generator=g).to(device, dtype).requires_grad_(backward) for _ in range(3))
        methods = [("exact flex", None,
                    lambda x, y, z: attention(x, y, z, decay=a, causal=args.causal, backend="flex"))]
        for delta in deltas:
            methods.append((f"farfield d={delta:g}", delta,
                            lambda x, y, z, dl=delta: farfield_attention(x, y, z, decay=a, delta=dl,
                                                                         causal=args.causal)))
        for name, delta, fn in methods:
            stats = {}
            if delta is not None:
                with torch.no_grad():
                    _, stats = farfield_attention(q, k, v, decay=a, delta=delta, causal=args.causal, return_stats=True)
            try:
                ms, peak = measure(fn, q, k, v, device, reps, backward)
                note = ""
            except torch.cuda.OutOfMemoryError:
                ms, peak, note = float("nan"), float("nan"), "OOM"
                torch.cuda.empty_cache()
            timing.append(dict(B=B, L=L, method=name, delta=delta, ms=ms, peak_mib=peak, note=note,
                               W=stats.get("W"), far_fraction=stats.get("far_fraction")))
            print(f"B={B} L={L:6d} {name:18s} {ms:10.3f} ms {peak:9.0f} MiB {note}", flush=True)
    base = {(r["B"], r["L"]): r["ms"] for r in timing if r["method"] == "exact flex"}
    for r in timing:
        r["speedup_vs_exact"] = base[(r["B"], r["L"])] / r["ms"] if r["ms"] == r["ms"] else float("nan")

    errs = errors(device, dtype, H, d, err_L, deltas, args.causal)
    command = "python " + " ".join(shlex.quote(x) for x in sys.argv)
    env = environment()
    (out / "farfield.json").write_text(json.dumps(dict(command=command, env=env, causal=args.causal,
                                                       alphas=a.tolist(), timing=timing, errors=errs), indent=2))
    what = "fwd+bwd" if backward else "forward only (no_grad; CPU smoke test, not a measurement)"
    lines = [f"Command: `{command}`", "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"{what}, H={H}, d={d}, {str(dtype).replace('torch.', '')}, causal={args.causal}, median of {reps}; "
             f"alphas = {', '.join(f'{x:.3g}' for x in a.tolist())}.", "",
             "| B x L | method | ms | peak MiB | speedup vs exact | band W per head | far fraction per head |",
             "|---|---|---|---|---|---|---|"]
    for r in timing:
        W = "" if r["W"] is None else " ".join(str(w) for w in r["W"])
        ff = "" if r["far_fraction"] is None else " ".join(f"{f:.2f}" for f in r["far_fraction"])
        lines.append(f"| {r['B']} x {r['L']} | {r['method']} | {r['ms']:.3f} | {r['peak_mib']:.0f} | "
                     f"{r['speedup_vs_exact']:.2f} | {W} | {ff} |{(' ' + r['note']) if r['note'] else ''}")
    lines += ["", f"Max relative error (max|o - ref| / max|ref|) vs the fp32 exact reference, B=1, L={err_L}; "
              "rel bound = farfield_error_bound / max|ref| (a-priori, worst case):", "",
              "| method | dtype | delta | rel err | rel bound |", "|---|---|---|---|---|"]
    lines += [f"| {e['method']} | {e['dtype']} | {'' if e['delta'] is None else format(e['delta'], 'g')} | "
              f"{e['rel_err']:.2e} | {e['rel_bound']:.2e} |" for e in errs]
    (out / "farfield.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
