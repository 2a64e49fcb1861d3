"""``zoo data``: locate / generate / prepare / show LRA data (see docs/data.md).

The main ``zoo`` CLI calls ``add_data_parser(subparsers)`` and then ``args.func(args)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from zoo.lra.common import TASKS

__all__ = ["add_data_parser"]

EPILOG = """\
examples:
  zoo data locate ~/lra                                  which task folders are under ~/lra
  zoo data generate listops --out data/                  data/listops-1000/basic_{train,val,test}.tsv (96k/2k/2k)
  zoo data generate listops --out data/small --n-train 2000 --n-val 200 --n-test 200
  zoo data generate pathfinder --out data/ --resolution 32 --contour-length 14
  zoo data prepare listops --root data/                  build the cache (the second run takes seconds)
  zoo data prepare text max_len=1000 --root ~/data       task fields as key=value (LRA's public text config)
  zoo data show image --root ~/data --set pixels=unit    ... or anywhere with --set
  zoo data show pathfinder --root data/                  sizes, lengths, examples, and a PNG grid
"""


def _common_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=TASKS, help="LRA task")
    p.add_argument("--root", required=True, help="folder searched for the task's files (see `zoo data locate`)")
    p.add_argument("--cache-dir", help="processed-data cache (default: $ZOO_DATA_CACHE or ~/.cache/zoo/lra)")
    p.add_argument("--strict", action="store_true", help="fail on the first malformed row instead of skipping it")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cache entry even if it is valid")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("options", nargs="*", metavar="KEY=VALUE",
                   help="task protocol fields right after TASK, e.g. max_len=1000 val_from=train pixels=signed "
                   "(see zoo.lra.config)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="set_options",
                   help="the same fields, anywhere on the line")


def _cmd_locate(args) -> int:
    from zoo.lra.locate import locate_all, search_patterns

    found = locate_all(args.root, max_depth=args.max_depth, contour_length=args.contour_length)
    missing = 0
    for task in TASKS:
        hits = found[task]
        if hits:
            extra = f"   (also: {', '.join(map(str, hits[1:]))})" if len(hits) > 1 else ""
            print(f"{task:<11} {hits[0]}{extra}")
        else:
            missing += 1
            pats = " or ".join(search_patterns(task, contour_length=args.contour_length))
            print(f"{task:<11} not found (searched {args.root} and {args.max_depth} levels below for {pats})")
    return 0 if missing < len(TASKS) else 1


def _cmd_generate_listops(args) -> int:
    from zoo.lra.listops_gen import ListOpsGenConfig, generate_listops

    cfg = ListOpsGenConfig(n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, max_depth=args.max_depth,
                           min_args=args.min_args, max_args=args.max_args, min_length=args.min_length,
                           max_length=args.max_length, leaf_prob=args.leaf_prob, seed=args.seed)
    t0 = time.perf_counter()
    try:
        out = generate_listops(args.out, cfg, task_name=args.task_name, progress=not args.no_progress,
                               overwrite=args.overwrite)
    except FileExistsError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2
    n = cfg.n_train + cfg.n_val + cfg.n_test
    dt = time.perf_counter() - t0
    print(f"wrote {out}/{args.task_name}_{{train,val,test}}.tsv ({cfg.n_train}/{cfg.n_val}/{cfg.n_test}) "
          f"in {dt:.1f} s ({n / dt:.0f} trees/s)")
    return 0


def _cmd_generate_pathfinder(args) -> int:
    try:
        from zoo.lra.pathfinder_gen import generate_pathfinder
    except ImportError as exc:
        print(f"zoo: error: the Pathfinder generator is not available ({exc})", file=sys.stderr)
        return 2
    extra = {"overwrite": True} if args.overwrite else {}
    t0 = time.perf_counter()
    try:
        out = generate_pathfinder(Path(args.out), resolution=args.resolution, contour_length=args.contour_length,
                                  n_images=args.n_images, seed=args.seed, workers=args.workers,
                                  progress=not args.no_progress, **extra)
    except FileExistsError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"wrote {out} ({args.n_images} images) in {dt:.1f} s ({args.n_images / dt:.0f} images/s)")
    return 0


def _prepare(args):
    from zoo.lra.prepare import prepare

    options = list(args.options) + list(args.set_options)
    if getattr(args, "workers", None) is not None and args.task in ("pathfinder", "pathx"):
        options.append(f"workers={args.workers}")
    return prepare(args.task, args.root, options=options, cache_dir=args.cache_dir, strict=args.strict,
                   progress=not args.no_progress, rebuild=args.rebuild, verify=getattr(args, "verify", False))


def _cmd_prepare(args) -> int:
    t0 = time.perf_counter()
    data = _prepare(args)
    sizes = ", ".join(f"{s} {st['n']}" for s, st in data.manifest["result"]["splits"].items())
    print(f"{data.task}: {sizes}  ({time.perf_counter() - t0:.1f} s)")
    print(f"cache:    {data.path}")
    print(f"manifest: {data.path / 'manifest.json'}")
    return 0


def _cmd_show(args) -> int:
    from zoo.lra.show import describe, sample_grid

    data = _prepare(args)
    print(describe(data, n_examples=args.n, split=args.split))
    if data.task in ("image", "pathfinder", "pathx"):
        out = Path(args.out) if args.out else data.path.parent / "show" / f"{data.path.name}-{args.split}.png"
        print(f"sample grid: {sample_grid(data, out, split=args.split, n=args.grid)}")
    return 0


def add_data_parser(subparsers) -> None:
    """Add ``data {locate,generate,prepare,show}`` to an argparse subparsers object."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    data = subparsers.add_parser("data", help="LRA data: locate, generate (ListOps, Pathfinder), prepare, show",
                                 description="Long Range Arena data: find the official files, generate ListOps / "
                                 "Pathfinder offline, build the processed cache, inspect it.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args, _p=data: (_p.print_help(), 0)[1])

    p = sub.add_parser("locate", help="print the folder found for each task under ROOT", formatter_class=fmt)
    p.add_argument("root", help="folder to search")
    p.add_argument("--max-depth", type=int, default=5, help="folder levels searched below ROOT")
    p.add_argument("--contour-length", type=int, default=14, choices=[6, 9, 14], help="Pathfinder difficulty")
    p.set_defaults(func=_cmd_locate)

    p = sub.add_parser("generate", help="generate ListOps or Pathfinder in the official layout")
    gen = p.add_subparsers(dest="generator", metavar="{listops,pathfinder}")
    p.set_defaults(func=lambda args, _p=p: (_p.print_help(), 0)[1])

    g = gen.add_parser("listops", help="LRA's ListOps generator (vectorised)", formatter_class=fmt)
    g.add_argument("--out", required=True, help="writes OUT/listops-1000/basic_{train,val,test}.tsv")
    g.add_argument("--n-train", type=int, default=96000)
    g.add_argument("--n-val", type=int, default=2000)
    g.add_argument("--n-test", type=int, default=2000)
    g.add_argument("--max-depth", type=int, default=10, help="root is depth 1; nodes at this depth are leaves")
    g.add_argument("--min-args", type=int, default=2)
    g.add_argument("--max-args", type=int, default=10)
    g.add_argument("--min-length", type=int, default=500, help="keep length > this")
    g.add_argument("--max-length", type=int, default=2000, help="keep length < this")
    g.add_argument("--leaf-prob", type=float, default=0.75, help="probability that a node above max depth is a leaf")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--task-name", default="basic", help="file prefix")
    g.add_argument("--overwrite", action="store_true", help="replace an existing OUT/listops-1000 folder")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_cmd_generate_listops)

    g = gen.add_parser("pathfinder", help="Pathfinder / Path-X images (snakes), official layout", formatter_class=fmt)
    g.add_argument("--out", required=True, help="writes OUT/pathfinder{RES}/curv_baseline/ (CL 6) or curv_contour_length_{CL}/")
    g.add_argument("--resolution", type=int, default=32, choices=[32, 128], help="32 = Pathfinder, 128 = Path-X")
    g.add_argument("--contour-length", type=int, default=14, choices=[6, 9, 14], help="easy / medium / hard")
    g.add_argument("--n-images", type=int, default=200_000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing generated set in that folder")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_cmd_generate_pathfinder)

    p = sub.add_parser("prepare", help="build (or check) the processed cache of a task", formatter_class=fmt)
    _common_prepare_args(p)
    p.add_argument("--verify", action="store_true", help="check the full SHA-256 of a cached entry")
    p.add_argument("--workers", type=int, help="PNG decoding processes for pathfinder/pathx (default: all cores)")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("show", help="sizes, length statistics, decoded examples (PNG grid for images)",
                       formatter_class=fmt)
    _common_prepare_args(p)
    p.add_argument("-n", type=int, default=3, help="examples printed")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--grid", type=int, default=16, help="images in the PNG grid (pixel tasks)")
    p.add_argument("--out", help="PNG grid path (default: CACHE_DIR/show/<entry>-<split>.png)")
    p.add_argument("--workers", type=int, help="PNG decoding processes for pathfinder/pathx (default: all cores)")
    p.set_defaults(func=_cmd_show)
