"""``zoo bench``: forward+backward time, spread, peak memory, kernel and error of layers side by side."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

EPILOG = """\
examples:
  zoo bench --quick                                  every layer at L = 256, 1024 on the CPU (what `make run` shows)
  zoo bench --device cuda --dtype bf16 --lengths 1024 4096 16384 --out runs/bench --save h200
  zoo bench --compare h200 h200-new                  what changed between two saved runs (noise-aware)

Every registered layer (plugins included) is measured unless --layers is given; `las[materialised]`
is the naive LaS operator with every L x L matrix built, the baseline the kernels beat.
Runs are saved in pytest-benchmark's format (`pytest-benchmark --storage .benchmarks compare` reads them).
"""


def _device(text: str) -> str:
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: benchmarks run on cpu or cuda")
    return text


def _cmd_bench(args) -> int:
    import torch

    import registry
    from zoo import bench

    if args.compare:
        old_path, old = bench.load_run(Path(args.storage), args.compare[0])
        new_path, new = bench.load_run(Path(args.storage), args.compare[1])
        header, rows, regressions = bench.compare_runs(old, new, args.threshold)
        print(f"old: {old_path}\nnew: {new_path}\n")
        print(bench.format_table([], header=header, body=rows))
        print(f"\n{regressions} regression(s) beyond max({args.threshold:g}%, the runs' noise)")
        return 1 if regressions else 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA GPU is available here (torch.cuda.is_available() is False)")
    lengths = args.lengths or ([256, 1024] if args.quick else [1024, 4096, 16384])
    reps = args.reps or (5 if args.quick else 10)
    d_model = args.d_model or (256 if args.quick else 512)
    layers = args.layers or bench.default_layers()
    for name in layers:
        registry.get(name)  # unknown names fail before anything runs, with close matches
    dtype = getattr(torch, DTYPES[args.dtype])
    print(f"forward+backward, B={args.batch}, d_model={d_model}, {args.dtype} on {args.device}, lengths {lengths}, "
          f"median of {reps} (+/-: half the inter-quartile range)", file=sys.stderr)
    rows = bench.measure(layers, lengths, batch=args.batch, d_model=d_model, device=args.device, dtype=dtype,
                         reps=reps, overrides=args.set, baseline=not args.no_baseline)
    print(bench.format_table(rows))
    command = "zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.out:
        for p in bench.save(rows, Path(args.out), command):
            print(f"wrote {p}")
    if args.save:
        options = {"batch": args.batch, "d_model": d_model, "dtype": args.dtype, "device": args.device, "reps": reps}
        print(f"saved {bench.save_benchmark_run(rows, Path(args.storage), args.save, command, options)}")
    return 0 if all(r.ms is not None or r.note == "OOM" for r in rows) else 1


def add_bench_parser(sub) -> None:
    from zoo.cli.common import positive_int

    p = sub.add_parser("bench", help="forward+backward time, memory and error of layers side by side",
                       description="Forward+backward time (median and spread), peak memory, ratio to vanilla, kernel "
                       "and error against the reference of registered layers on random inputs.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", nargs="+", metavar="NAME", help="registry names (default: every registered layer)")
    p.add_argument("--lengths", nargs="+", type=positive_int, metavar="L", help="sequence lengths")
    p.add_argument("--quick", action="store_true", help="small CPU-friendly sweep (L = 256, 1024; d_model 256)")
    p.add_argument("--batch", type=positive_int, default=2, help="batch size B")
    p.add_argument("--d-model", type=positive_int, help="model width (default 512: head_dim 64 with 8 heads)")
    p.add_argument("--device", type=_device, default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="parameter and input dtype")
    p.add_argument("--reps", type=positive_int, help="timed repetitions (default 10; 5 with --quick)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="field overrides applied to every layer")
    p.add_argument("--no-baseline", action="store_true", help="skip the materialised-LaS baseline row")
    p.add_argument("--out", help="folder for bench.md / bench.json / bench.png")
    p.add_argument("--save", metavar="NAME", help="save the run (pytest-benchmark format) under --storage")
    p.add_argument("--storage", default=".benchmarks", help="where saved runs live")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two saved runs instead of measuring")
    p.add_argument("--threshold", type=float, default=10.0, help="%% change below which --compare calls it the same")
    p.set_defaults(func=_cmd_bench)
