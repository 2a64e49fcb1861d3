"""Where one training step's GPU time goes: the top CUDA kernels of the paper-settings ListOps step.

    python benchmarks/profile_step.py --layers vanilla las s4d long_conv --out results/profile

For each layer: the ``listops`` experiment's model and data (``zoo train listops layer=NAME``), a few
warm-up steps, then ``--steps`` optimizer steps under ``torch.profiler`` run eagerly with the kernels
of the captured step (inside ``graph_safe()``): the per-step GPU time of every kernel, summed, which is
what a CUDA-graph replay costs. Writes ``profile.md`` (one table per layer) and prints it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

KERNEL_CLASSES = {  # kernel-name fragments -> the class the ">= 70%" counts (attention, matrix, FFT)
    "attention": ("flex_attention", "fmha", "attention", "flash"),
    "matrix": ("nvjet", "gemm", "xmma", "cutlass", "wgmma", "_mm_", "triton_tem_fused_mm", "triton_tem_fused_addmm"),
    "fft": ("fft",),
}


def kernel_class(name: str) -> str:
    low = name.lower()
    return next((c for c, keys in KERNEL_CLASSES.items() if any(k in low for k in keys)), "other")


def profile(layer: str, steps: int, extra: list[str], workdir: Path) -> str:
    import torch
    from torch.profiler import ProfilerActivity

    from zoo.functional.capture import graph_safe
    from zoo.train.batching import epoch_batches
    from zoo.train.experiment import load_experiment
    from zoo.train.step import optimizer_step
    from zoo.train.trainer import Trainer

    exp = load_experiment("listops", [f"layer={layer}", "train.progress=false", "train.tensorboard=false",
                                      "data.generate_if_missing=true", f"train.run_name=profile-{layer}", *extra])
    tr = Trainer(exp, workdir / exp.run_name())
    src, bs = tr.sources["train"], tr.cfg.train.batch_size
    # batches of one shape (the commonest bucket), so that nothing compiles inside the profiled window
    candidates = [src.batch(idx, bs) for idx in epoch_batches(src.longest, bs, 0, 0)[: 20 * (3 + steps)]]
    lengths = [b.inputs[0].shape[1] for b in candidates]
    common = max(set(lengths), key=lengths.count)
    batches = [b for b, n in zip(candidates, lengths) if n == common][: 3 + steps]
    steps = len(batches) - 3

    def step(b):
        tr.model.train()
        optimizer_step(tr.model, tr.params, tr.optimizer, b.inputs, b.masks, b.labels, b.weights, 1.0 / b.n_rows,
                       tr.cfg.optim.grad_clip, tr._autocast)

    with graph_safe():
        for b in batches[:3]:
            step(b)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                                    record_shapes=True) as prof:
            for b in batches[3:]:
                step(b)
            torch.cuda.synchronize()
    averages = prof.key_averages()
    # the kernels themselves: not the GPU-side spans of annotations (a compiled graph's "## Call
    # CompiledFxGraph ##", "Optimizer.step#AdamW.step"), which cover kernels already counted
    cpu_names = {e.key for e in averages if e.device_type.name == "CPU"}
    events = [e for e in averages if getattr(e, "self_device_time_total", 0) > 0 and e.device_type.name == "CUDA"
              and not e.key.startswith("## ") and e.key not in cpu_names]
    events.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in events) / steps / 1e3  # ms per step
    tokens = sum(b.padded_tokens for b in batches[3:]) / steps
    shares = {c: 0.0 for c in (*KERNEL_CLASSES, "other")}
    for e in events:
        shares[kernel_class(e.key)] += e.self_device_time_total / steps / 1e3
    lines = [f"### {layer}: {total:.2f} ms of GPU time per step (batches of {bs} x {common}: {tokens:,.0f} padded "
             "tokens per step)", "",
             "GPU time by kernel class: " + ", ".join(f"{c} {ms:.2f} ms ({100 * ms / total:.0f}%)"
                                                       for c, ms in shares.items()), "",
             "| kernel | ms / step | share | calls / step |", "|---|---|---|---|"]
    for e in events[:25]:
        ms = e.self_device_time_total / steps / 1e3
        lines.append(f"| `{e.key[:90]}` | {ms:.3f} | {100 * ms / total:.1f}% | {e.count / steps:.0f} |")
    # the same GPU time by the operator that launched it (with input shapes): which code to fuse next
    ops = [e for e in prof.key_averages(group_by_input_shape=True)
           if e.device_type.name == "CPU" and getattr(e, "self_device_time_total", 0) > 0]
    ops.sort(key=lambda e: -e.self_device_time_total)
    lines += ["", f"Launched by (the operator whose own kernels took the time; {layer}):", "",
              "| operator | input shapes | ms / step | calls / step |", "|---|---|---|---|"]
    for e in ops[:30]:
        shapes = str(e.input_shapes)[:110].replace("|", "/")
        lines.append(f"| `{e.key[:60]}` | {shapes} | {e.self_device_time_total / steps / 1e3:.3f} | "
                     f"{e.count / steps:.0f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", nargs="*", default=["vanilla", "las", "s4d", "long_conv"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--set", nargs="*", default=[], help="experiment overrides for every run")
    p.add_argument("--out", default="results/profile")
    args = p.parse_args()
    from zoo.measure import environment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for layer in args.layers:
            parts.append(profile(layer, args.steps, args.set, Path(tmp)))
            print(parts[-1], flush=True)
    text = f"Command: `python {' '.join(sys.argv)}`\n\nEnvironment: {environment()}\n\n" + "\n\n".join(parts) + "\n"
    (out / "profile.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
