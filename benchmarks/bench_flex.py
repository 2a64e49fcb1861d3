"""FlexAttention at the paper-settings ListOps call (B 32, H 8, L 1280, head dim 32, bf16, padded
keys), forward + backward: the default kernel options against inductor's autotuned choice, plain
(vanilla) and with the LaS decay score_mod (computed, ``exp`` per score, or ``exp2`` of
pre-scaled rates; or looked up in an ``(H, L)`` table). Which block sizes suit head dim 32 on this
GPU, and what the decay costs.

    python benchmarks/bench_flex.py --out results/flex

Writes ``flex.md`` / ``flex.json``; the autotuner's own table (every config tried, with its time)
goes to stderr. FLOPs: 4 B H L^2 d forward, 2.5x that backward (GPU.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=4, default=[32, 8, 1280, 32], metavar=("B", "H", "L", "d"))
    p.add_argument("--modes", nargs="*", default=["default", "max-autotune-no-cudagraphs"])
    p.add_argument("--out", default="results/flex")
    args = p.parse_args()
    import triton.testing
    from torch.nn.attention.flex_attention import flex_attention

    from zoo.functional.backends.flex import decay_score_mod, padding_block_mask
    from zoo.layers.attention import decay_schedule
    from zoo.measure import environment

    B, H, L, d = args.shape
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(B, H, L, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
               for _ in range(3))
    valid = torch.ones(B, L, dtype=torch.bool, device="cuda")
    lengths = torch.randint(L // 2, L + 1, (B,), generator=g, device="cuda")  # ~a quarter of keys padded
    valid &= torch.arange(L, device="cuda")[None, :] < lengths[:, None]
    block_mask = padding_block_mask(valid, causal=False)
    alphas = torch.tensor(decay_schedule(H, 1, 0.01, 0.5), device="cuda")
    flops = 4 * B * H * L * L * d
    rows = []
    for mode in args.modes:
        fn = torch.compile(flex_attention, dynamic=False, mode=None if mode == "default" else mode)
        table = torch.exp(-alphas[:, None] * torch.arange(L, device="cuda", dtype=torch.float32))  # (H, L)

        def table_mod(score, b, h, q_idx, kv_idx):  # the decay looked up, not computed: one load, no exp
            return score * table[h, (q_idx - kv_idx).abs()]

        alphas_log2 = alphas * 1.4426950408889634  # exp(-a t) = exp2(-a log2(e) t)

        def exp2_mod(score, b, h, q_idx, kv_idx):  # the decay through exp2 (the hardware's own exponential)
            return score * torch.exp2(-alphas_log2[h] * (q_idx - kv_idx).abs().to(torch.float32))

        variants = (("vanilla", None), ("las decay", decay_score_mod(alphas)), ("las table", table_mod),
                    ("las exp2", exp2_mod))
        for name, score_mod in variants:
            def fwd():
                return fn(q, k, v, score_mod=score_mod, block_mask=block_mask)

            def fwd_bwd():
                for t in (q, k, v):
                    t.grad = None
                fwd().float().sum().backward()

            fwd_bwd()  # compile (and, under max-autotune, tune) both directions
            with torch.no_grad():
                f_ms = triton.testing.do_bench(fwd, warmup=25, rep=200)
            fb_ms = triton.testing.do_bench(fwd_bwd, warmup=25, rep=200)
            rows.append({"mode": mode, "score_mod": name, "fwd_ms": f_ms, "fwd_bwd_ms": fb_ms,
                         "fwd_tflops": flops / f_ms / 1e9, "fwd_bwd_tflops": 3.5 * flops / fb_ms / 1e9})
            print(rows[-1], flush=True)
    lines = [f"FlexAttention, B={B} H={H} L={L} d={d}, bf16, padded keys (block mask), forward and forward+backward "
             "(the backward's time includes the sum and the casts around it)", "",
             "| compile mode | score_mod | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['score_mod']} | {r['fwd_ms']:.3f} | {r['fwd_tflops']:.0f} | {r['fwd_bwd_ms']:.3f} | "
              f"{r['fwd_bwd_tflops']:.0f} |" for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python " + " ".join(sys.argv)
    (out / "flex.md").write_text(f"Command: `{cmd}`\n\nEnvironment: {environment()}\n\n" + "\n".join(lines) + "\n")
    (out / "flex.json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
