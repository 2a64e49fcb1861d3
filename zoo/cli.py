"""The ``zoo`` command: list / describe / info / compare / train / data.

Every layer is addressed by its registry name; fields are overridden with ``key=value`` pairs
(OmegaConf dotlist syntax), e.g. ``zoo describe las n_heads=4 causal=true``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EPILOG = """\
examples:
  zoo list                          every registered layer (built-ins and plugins)
  zoo describe las pool_size=5      the config schema, and the config after overrides
  zoo info                          which attention backends run here, and why the others do not
  zoo compare --quick               forward+backward side by side on CPU (what `make run` does)
  zoo compare --layers vanilla las s4d --lengths 1024 4096 --device cuda --dtype bf16 --out runs/cmp
  zoo train listops_small             train an LRA experiment (configs/experiments/), resumable
  zoo train listops layer=las n_layers=6 --data-root ~/lra
  zoo data generate listops --out data/   (offline LRA data; `zoo data --help`)

Plugins: third-party layers register through the entry-point group `zoo.layers`;
set ZOO_DISABLE_PLUGINS=1 to skip them. See README.md.
"""


def _cmd_list(args) -> int:
    import registry

    entries = registry.entries(args.pattern)
    if not entries:
        print(f"no layer matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = [("name", "complexity", "causal", "source", "summary")]
    for e in entries:
        complexity = e.cls.complexity_for(e.config_class()) if hasattr(e.cls, "complexity_for") else getattr(e.cls, "complexity", "?")
        rows.append((e.name, complexity, "yes" if getattr(e.cls, "supports_causal", False) else "no",
                     "builtin" if e.source == "builtin" else e.source, e.summary))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]}".rstrip())
    for name, err in registry.broken_plugins().items():
        print(f"[broken plugin] {err}", file=sys.stderr)
    return 0


def _cmd_describe(args) -> int:
    from omegaconf import OmegaConf

    import registry
    from zoo.configs import find_config, layer_config

    cfg = layer_config(args.name, args.overrides)
    print(registry.describe(cfg.name))
    src = find_config("layers", args.name) if not args.name.endswith((".yaml", ".yml")) else Path(args.name)
    print(f"\neffective config ({src or 'dataclass defaults'}{' + overrides' if args.overrides else ''}):")
    print(OmegaConf.to_yaml(cfg).rstrip())
    return 0


def _cmd_info(args) -> int:
    import platform

    import torch

    import registry
    from zoo.functional import backends

    print(f"zoo {__import__('zoo').__version__}  torch {torch.__version__}  python {platform.python_version()}")
    devices = ["cpu"] + ([f"cuda:{i}" for i in range(torch.cuda.device_count())][:1] if torch.cuda.is_available() else [])
    print(f"devices: {', '.join(devices)}" + ("" if torch.cuda.is_available() else "  (no CUDA device)"))
    for device in devices:
        print(f"\nattention backends on {device} (priority order; `auto` takes the first that can run):")
        rows = backends.report(device)
        w = max(len(r["workload"]) for r in rows)
        for r in rows:
            status = "yes" if r["ok"] else "no: " + r["why_not"]
            print(f"  {r['backend']:<10} {r['workload']:<{w}}  {status}")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        print(f"\nkernel picked per layer on {device} ({str(dtype).replace('torch.', '')}, B=1, L=1024, training / inference):")
        for name in registry.list():
            try:
                layer = registry.build(name, d_model=512)
                x = torch.zeros(1, 1024, 512, dtype=dtype, device=device)
                picks = [layer.kernel_name(x, requires_grad=g) for g in (True, False)]
                print(f"  {name:<12} {picks[0]} / {picks[1]}")
            except Exception as exc:
                print(f"  {name:<12} error: {exc}")
    return 0


def _cmd_compare(args) -> int:
    import torch

    import registry
    from zoo import bench

    if args.quick:
        lengths = args.lengths or [256, 1024]
        reps = args.reps or 3
    else:
        lengths = args.lengths or [1024, 4096, 16384]
        reps = args.reps or 10
    layers = args.layers or bench.default_layers()
    for name in layers:
        registry.get(name) if not name.endswith((".yaml", ".yml")) else None  # unknown names fail early
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    print(f"forward+backward, B={args.batch}, d_model={args.d_model}, {args.dtype} on {args.device}, "
          f"lengths {lengths}, median of {reps}")
    rows = bench.compare(layers, lengths, batch=args.batch, d_model=args.d_model, device=args.device, dtype=dtype,
                         reps=reps, overrides=args.set)
    print(bench.format_table(rows))
    if args.out:
        command = "zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        for p in bench.save(rows, Path(args.out), command):
            print(f"wrote {p}")
    return 0 if all(r.ms is not None for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="Long-range sequence mixers (attention, LaS, S4D, long convolutions) behind one "
        "registry: list, configure, inspect kernels, benchmark side by side, train on LRA, prepare LRA data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered layers")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: all)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("describe", help="show a layer's config schema and the effective config")
    p.add_argument("name", help="registry name or path to a layer YAML")
    p.add_argument("overrides", nargs="*", help="field overrides, key=value (OmegaConf dotlist)")
    p.set_defaults(func=_cmd_describe)

    p = sub.add_parser("info", help="which attention backends run here, and why the others do not")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("compare", help="forward+backward time, peak memory and error of layers side by side",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--layers", nargs="+", help="registry names (default: every registered layer)")
    p.add_argument("--lengths", nargs="+", type=int, help="sequence lengths")
    p.add_argument("--quick", action="store_true", help="small CPU-friendly sweep (L = 256, 1024)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--reps", type=int, help="timed repetitions (median reported)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides applied to every layer")
    p.add_argument("--out", help="folder for compare.md / compare.json / compare.png")
    p.set_defaults(func=_cmd_compare)

    from zoo.lra.cli import add_data_parser
    from zoo.lra.train import add_train_parser

    add_train_parser(sub)
    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    import registry

    try:
        return int(args.func(args) or 0)
    except (registry.RegistryError, ValueError, FileNotFoundError) as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
