"""Training speed of every layer on paper-settings ListOps, in one process (ratios are same-process).

    python benchmarks/train_speed.py --layers vanilla las local smooth las_chunk s4d long_conv \\
        --steps 300 --epoch vanilla --out results/train_speed

For each layer: the ``listops`` experiment (6 layers, width 256, 8 heads, batch 32, bf16 on CUDA)
with ``layer=NAME``, trained ``--steps`` optimizer steps through the real trainer (length-bucketed
batches, the split on the device, shape buckets compiled before the first step); reported from
the run's own ``summary.json``: median step time over the logged windows after the first fifth,
real and padded tokens/s, padding fraction, compiles during the steps (must be 0), peak memory,
the kernel the mixer ran, warm-up (compile) seconds. ``--epoch NAME`` also times one full epoch of
that layer, validation included. Writes ``train_speed.md`` and ``train_speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path


def run(layer: str, steps: int | None, extra: list[str], workdir: Path, mode: str = "graphs",
        graphed_eval: bool = False) -> dict:
    from zoo.train.experiment import load_experiment
    from zoo.train.trainer import Trainer

    over = [f"layer={layer}", "train.progress=false", "train.tensorboard=false", "train.log_every=25",
            "data.generate_if_missing=true", f"train.run_name=speed-{layer}-{mode}-{steps or 'epoch'}", *extra,
            *(["train.cuda_graphs=false"] if mode == "eager" else [])]
    exp = load_experiment("listops", over)
    from zoo.functional.compiled import uncompiled

    # unfused: every function around the kernels (zoo.models.fused, the masking of keys and values,
    # the value pooling, the convolutions' layouts) as eager kernels; FlexAttention itself stays compiled
    with uncompiled() if mode == "unfused" else contextlib.nullcontext():
        return _fit(exp, Trainer, layer, steps, workdir, mode, graphed_eval)


def _fit(exp, Trainer, layer, steps, workdir, mode, graphed_eval) -> dict:
    t0 = time.perf_counter()
    trainer = Trainer(exp, workdir / exp.run_name())
    build_s = time.perf_counter() - t0
    if graphed_eval and trainer.device.type == "cuda":  # evaluation replayed from CUDA graphs (zoo.train.fast_eval)
        from zoo.train.fast_eval import GraphedForward, graphed_evaluate

        graphed = GraphedForward(trainer.model, trainer._autocast, trainer.device)
        trainer.evaluate = lambda split: graphed_evaluate(trainer, graphed, split)
    t0 = time.perf_counter()
    summary = trainer.fit(max_steps=steps or trainer.steps_per_epoch)
    wall = time.perf_counter() - t0
    keep = ("params", "steps", "step_ms_median", "tokens_per_s", "padded_tokens_per_s", "pad_fraction", "compiles",
            "compiles_after_warmup", "peak_mem_mib", "kernel", "warmup_seconds", "train_seconds", "best_val_acc",
            "test_acc", "device", "precision", "cuda_graphs")
    return {"layer": layer, "mode": mode, "graphed_eval": graphed_eval, "build_seconds": round(build_s, 1),
            "fit_wall_seconds": round(wall, 1),
            **{k: summary.get(k) for k in keep}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", nargs="*",
                   default=["vanilla", "las", "local", "smooth", "las_chunk", "s4d", "long_conv"])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--epoch", nargs="*", default=[], help="layers to also time for one full epoch")
    p.add_argument("--eager", nargs="*", default=["vanilla"],
                   help="layers to also time with train.cuda_graphs=false (the steps launched one kernel at a time)")
    p.add_argument("--unfused", nargs="*", default=[],
                   help="layers to also time with the fused functions around the kernels run eagerly "
                        "(zoo.functional.compiled.uncompiled; CUDA graphs still on)")
    p.add_argument("--graphed-eval", action="store_true",
                   help="evaluate through zoo.train.fast_eval.GraphedForward (one CUDA graph per eval shape)")
    p.add_argument("--set", nargs="*", default=[], help="experiment overrides for every run")
    p.add_argument("--out", default="results/train_speed")
    args = p.parse_args()

    from zoo.measure import environment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layer in args.layers:
            rows.append(run(layer, args.steps, args.set, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
        for layer in args.unfused:
            rows.append(run(layer, args.steps, args.set, Path(tmp), mode="unfused"))
            print(json.dumps(rows[-1]), flush=True)
        for layer in args.eager:
            rows.append(run(layer, args.steps, args.set, Path(tmp), mode="eager"))
            print(json.dumps(rows[-1]), flush=True)
        for layer in args.epoch:
            rows.append({**run(layer, None, args.set, Path(tmp), graphed_eval=args.graphed_eval), "epoch": True})
            print(json.dumps(rows[-1]), flush=True)
    base = next((r["step_ms_median"] for r in rows if r["layer"] == "vanilla" and r["mode"] == "graphs"
                 and not r.get("epoch")), None)
    lines = ["| layer | step | step ms (median) | x vanilla | real tokens/s | padded tokens/s | padding | compiles in "
             "the steps | warm-up s | peak MiB | kernel (train / eval) |", "|" + "---|" * 11]
    for r in rows:
        if r.get("epoch"):
            continue
        ratio = f"{r['step_ms_median'] / base:.2f}" if base and r["step_ms_median"] else "-"
        kern = r["kernel"] or {}
        graphs = r["cuda_graphs"] or {}
        step = f"{graphs.get('captured')} CUDA graphs" if graphs.get("enabled") else "eager"
        step += ", unfused" if r["mode"] == "unfused" else ""
        lines.append(f"| {r['layer']} | {step} | {r['step_ms_median']:.1f} | {ratio} | {r['tokens_per_s']:,.0f} | "
                     f"{r['padded_tokens_per_s']:,.0f} | {100 * r['pad_fraction']:.1f}% | "
                     f"{r['compiles_after_warmup']} | "
                     f"{r['warmup_seconds']:.0f} | {r['peak_mem_mib'] or 0:,.0f} | {kern.get('training')} / "
                     f"{kern.get('inference')} |")
    for r in rows:
        if r.get("epoch"):
            lines.append(f"\nOne epoch of {r['layer']} ({r['steps']} steps, validation and test included, "
                         f"{'graphed' if r.get('graphed_eval') else 'eager'} evaluation): "
                         f"{r['fit_wall_seconds']:.0f} s wall ({r['train_seconds']:.0f} s training, "
                         f"{r['warmup_seconds']:.0f} s warm-up), val acc {r['best_val_acc']}, "
                         f"test acc {r['test_acc']}.")
    env = environment()
    cmd = "python " + " ".join(sys.argv)
    (out / "train_speed.md").write_text(f"Command: `{cmd}`\n\nEnvironment: {env}\n\n" + "\n".join(lines) + "\n")
    (out / "train_speed.json").write_text(json.dumps({"command": cmd, "env": env, "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
