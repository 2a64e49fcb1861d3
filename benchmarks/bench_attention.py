"""Attention sweep on one GPU: every backend and preset, fwd+bwd time, TFLOP/s, peak memory,
ratio to vanilla SDPA, the backend `auto` picks, and the error of each backend vs the reference.

    python benchmarks/bench_attention.py --out docs/results/attention [--quick]

Writes ``attention.md`` and ``attention.json``. FLOPs are counted as 4 B H L^2 d forward and
2.5x that for backward (GPU.md). ``--quick`` runs tiny sizes on CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

import registry
from zoo.functional import backends
from zoo.functional.attention import attention, attention_reference
from zoo.measure import environment, time_and_peak

PRESETS = ["vanilla", "local", "smooth", "las", "las_chunk"]


def preset_kwargs(name: str, H: int, device) -> dict:
    layer = registry.build(name, d_model=H * 64, n_heads=H)
    c = layer.config
    return dict(decay=layer.alphas, pool=c.pool_size, chunk=c.chunk_size or None, causal=c.causal,
                count_include_pad=c.count_include_pad)


def measure(fn, q, k, v, device, reps):
    def step():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v).float().sum().backward()

    return time_and_peak(step, device, reps)


def errors(device, dtype, H=8, L=1024, B=2):
    """Max relative error of each backend vs the fp32 reference, per preset, causal and padded."""
    rows = []
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(B, H, L, 64, generator=g).to(device) for _ in range(3))
    pad = torch.zeros(B, L, dtype=torch.bool, device=device)
    pad[1, L - L // 4 :] = True
    for name in PRESETS:
        for causal in (False, True):
            kw = preset_kwargs(name, H, device)
            kw.update(causal=causal, key_padding_mask=pad)
            ref = attention_reference(q, k, v, **kw)
            for be in ["auto", *backends.names()[:-1]]:
                try:
                    out = attention(q.to(dtype), k.to(dtype), v.to(dtype), backend=be, **kw)
                    err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
                    rows.append(dict(preset=name, causal=causal, dtype=str(dtype).replace("torch.", ""), backend=be,
                                     rel_err=err))
                except backends.BackendUnavailable:
                    pass
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = [(2, 128)] if args.quick else [(4, 4096), (1, 16384), (1, 65536)]
    H, d = (2, 16) if args.quick else (8, 64)
    reps = 2 if args.quick else args.reps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timing = []
    for B, L in shapes:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(B, H, L, d, generator=g).to(device, dtype).requires_grad_(True) for _ in range(3))
        flops = 4 * B * H * L * L * d * 3.5
        for name in PRESETS:
            kw = preset_kwargs(name, H, device)
            from zoo.functional.attention import make_call

            call = make_call(q.shape, dtype, device, decay=kw["decay"], chunk=kw["chunk"], causal=kw["causal"],
                             padded=False, requires_grad=True)
            auto = backends.select(call).name
            for be in backends.names():
                if be == "reference" and L > 4096:
                    continue  # L x L fp32 scores: out of reach by design
                if backends.get(be).not_supported_reasons(call):
                    continue
                try:
                    ms, peak = measure(lambda a, b, c: attention(a, b, c, backend=be, **kw), q, k, v, device, reps)
                    note = ""
                except torch.cuda.OutOfMemoryError:
                    ms, peak, note = float("nan"), float("nan"), "OOM"
                    torch.cuda.empty_cache()
                eff_flops = flops * (kw["chunk"] / L if kw["chunk"] and kw["chunk"] < L else 1)
                timing.append(dict(B=B, L=L, preset=name, backend=be, auto=be == auto, ms=ms, peak_mib=peak,
                                   tflops=eff_flops / ms / 1e9 if ms == ms else float("nan"), note=note))
                print(f"B={B} L={L:6d} {name:10s} {be:10s} {ms:9.3f} ms  {peak:9.0f} MiB "
                      f"{'(auto)' if be == auto else ''} {note}", flush=True)
    base = {(r["B"], r["L"]): r["ms"] for r in timing if r["preset"] == "vanilla" and r["backend"] == "sdpa"}
    for r in timing:
        r["x_vanilla_sdpa"] = r["ms"] / base[(r["B"], r["L"])] if (r["B"], r["L"]) in base else float("nan")
    errs = errors(device, dtype, H=H, L=128 if args.quick else 1024)
    if device.type == "cuda":
        errs += errors(device, torch.float32, H=H, L=1024)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    env = environment()
    record = dict(command=command, env=env, timing=timing, errors=errs)
    (out / "attention.json").write_text(json.dumps(record, indent=2))
    lines = [f"Command: `{command}`", "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"fwd+bwd, H={H}, d={d}, {str(dtype).replace('torch.', '')}, median of {reps}; "
             "(auto) marks the backend `auto` picks.", "",
             "| B x L | preset | backend | ms | TFLOP/s | peak MiB | x vanilla (SDPA) |",
             "|---|---|---|---|---|---|---|"]
    for r in timing:
        lines.append(f"| {r['B']} x {r['L']} | {r['preset']} | {r['backend']}{' (auto)' if r['auto'] else ''} | "
                     f"{r['ms']:.3f} | {r['tflops']:.0f} | {r['peak_mib']:.0f} | {r['x_vanilla_sdpa']:.2f} | "
                     f"{r['note']}".rstrip(" |") + " |")
    lines += ["", f"Max relative error vs the fp32 reference (B=2, one sample 25% padded, H={H}, d={d}):", "",
              "| preset | causal | dtype | backend | rel err |", "|---|---|---|---|---|"]
    lines += [f"| {e['preset']} | {e['causal']} | {e['dtype']} | {e['backend']} | {e['rel_err']:.2e} |" for e in errs]
    (out / "attention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
