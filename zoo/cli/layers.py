"""``zoo list``, ``zoo describe`` and ``zoo info``: the registered layers and the kernels behind them."""

from __future__ import annotations

import sys


def _cmd_list(args) -> int:
    import registry

    entries = registry.entries(args.pattern)
    if not entries:
        print(f"no layer matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = [("name", "complexity", "causal", "source", "summary")]
    for e in entries:
        rows.append((e.name, e.cls.complexity_for(e.config_class()), "yes" if e.cls.supports_causal else "no",
                     e.source, e.summary))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]}".rstrip())
    for err in registry.broken_plugins().values():
        print(f"[broken plugin] {err}", file=sys.stderr)
    return 0


def _cmd_describe(args) -> int:
    import registry
    from zoo.config import find_config, resolve_layer

    layer = resolve_layer(args.name, args.overrides)
    print(registry.describe(layer.name))
    src = args.name if args.name.endswith((".yaml", ".yml")) else find_config("layers", args.name)
    from omegaconf import OmegaConf

    print(f"\neffective config ({src or 'dataclass defaults'}{' + overrides' if args.overrides else ''}):")
    print(OmegaConf.to_yaml(layer.to_dict()).rstrip())
    return 0


def _cmd_info(args) -> int:
    import platform

    import torch

    import registry
    import zoo
    from zoo.functional import backends

    print(f"zoo {zoo.__version__}  torch {torch.__version__}  python {platform.python_version()}")
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    print(f"devices: {', '.join(devices)}" + ("" if torch.cuda.is_available() else "  (no CUDA device)"))
    for device in devices:
        print(f"\nattention backends on {device} (priority order; `auto` takes the first that can run):")
        rows = backends.report(device)
        w = max(len(r["workload"]) for r in rows)
        for r in rows:
            status = "yes" if r["ok"] else "no: " + r["why_not"]
            print(f"  {r['backend']:<10} {r['workload']:<{w}}  {status}")
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        print(f"\nkernel picked per layer on {device} ({str(dtype).replace('torch.', '')}, B=1, L=1024, d_model 512, "
              "training / inference):")
        for name in registry.list():
            try:
                layer = registry.build(name, d_model=512)
                x = torch.zeros(1, 1024, 512, dtype=dtype, device=device)
                picks = [layer.kernel_name(x, requires_grad=g) for g in (True, False)]
                print(f"  {name:<12} {picks[0]} / {picks[1]}")
            except Exception as exc:  # one layer's problem must not hide the others
                print(f"  {name:<12} error: {exc}")
    return 0


def add_layer_parsers(sub) -> None:
    p = sub.add_parser("list", help="list registered layers", description="List the registered layers.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern (default: all)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("describe", help="show a layer's config schema and the effective config",
                       description="A layer's config schema (field, type, default, help) and its effective config.")
    p.add_argument("name", help="registry name or path to a layer YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="field overrides (OmegaConf dotlist)")
    p.set_defaults(func=_cmd_describe)

    p = sub.add_parser("info", help="which attention backends run here, and why the others do not",
                       description="Attention backends on this machine (and why the others cannot run), and "
                       "the kernel every layer would use.")
    p.set_defaults(func=_cmd_info)
