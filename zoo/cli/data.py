"""``zoo data``: locate / generate / prepare / show LRA data (see docs/data.md).

Every subcommand is built from the task registry (``zoo.data.tasks``): the task choices, and the
``generate`` options (one per field of each generator's config dataclass, with its help text).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from zoo.data.tasks import get_task, task_names

__all__ = ["add_data_parser"]

EPILOG = """\
examples:
  zoo data locate ~/lra                                  which task folders are under ~/lra
  zoo data locate ~/lra contour_length=9                 ... with a task field changed (where a task has it)
  zoo data generate listops --out data/                  data/listops-1000/basic_{train,val,test}.tsv (96k/2k/2k)
  zoo data generate listops --out data/small --n-train 2000 --n-val 200 --n-test 200
  zoo data generate pathfinder --out data/ --contour-length 14        Pathfinder-32 hard
  zoo data generate pathx --out data/                    Path-X (128 px)
  zoo data prepare listops --root data/                  build the cache (the second run takes seconds)
  zoo data prepare text max_len=1000 --root ~/data       task fields as key=value, anywhere on the line
  zoo data show pathfinder --root data/                  sizes, lengths, examples, and a PNG grid
"""


def _common_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=task_names(), help="LRA task")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="task protocol fields, e.g. max_len=1000 val_from=train pixels=signed (anywhere on the line)")
    p.add_argument("--root", required=True, help="folder searched for the task's files (see `zoo data locate`)")
    p.add_argument("--cache-dir", help="processed-data cache (default: $ZOO_DATA_CACHE or ~/.cache/zoo/lra)")
    p.add_argument("--strict", action="store_true", help="fail on the first malformed row instead of skipping it")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cache entry even if it is valid")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _cmd_locate(args) -> int:
    from zoo.data.locate import locate_all

    configs = {}
    for name in task_names():
        spec = get_task(name)
        keys = {f.name for f in dataclasses.fields(spec.config_class)}
        configs[name] = spec.make_config([o for o in args.overrides if o.split("=", 1)[0] in keys])
    found = locate_all(args.root, max_depth=args.max_depth, configs=configs)
    missing = 0
    for task, hits in found.items():
        if hits:
            extra = f"   (also: {', '.join(map(str, hits[1:]))})" if len(hits) > 1 else ""
            print(f"{task:<11} {hits[0]}{extra}")
        else:
            missing += 1
            pats = " or ".join(get_task(task).patterns(configs[task]))
            print(f"{task:<11} not found (searched {args.root} and {args.max_depth} levels below for {pats})")
    return 0 if missing < len(found) else 1


def _progress(args) -> bool:
    """Progress bars only for a person watching: not with --no-progress, not when stderr is a file or a pipe."""
    return not args.no_progress and sys.stderr.isatty()


def _cmd_generate(args) -> int:
    spec = get_task(args.generator)
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(spec.generator.config_class)
              if getattr(args, f.name) is not None}
    task_cfg = spec.default_config()
    cfg = spec.generator_config(task_cfg, fields)
    t0 = time.perf_counter()
    try:
        out = spec.generator.generate(Path(args.out), cfg, task_cfg, _progress(args), args.overwrite)
    except FileExistsError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({', '.join(f'{k}={v}' for k, v in dataclasses.asdict(cfg).items())}) "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _prepare(args):
    from zoo.data.prepare import prepare

    return prepare(args.task, args.root, options=list(args.overrides), cache_dir=args.cache_dir, strict=args.strict,
                   progress=_progress(args), rebuild=args.rebuild, verify=getattr(args, "verify", False))


def _cmd_prepare(args) -> int:
    t0 = time.perf_counter()
    data = _prepare(args)
    sizes = ", ".join(f"{s} {st['n']}" for s, st in data.manifest["result"]["splits"].items())
    print(f"{data.task}: {sizes}  ({time.perf_counter() - t0:.1f} s)")
    print(f"cache:    {data.path}")
    print(f"manifest: {data.path / 'manifest.json'}")
    return 0


def _cmd_show(args) -> int:
    from zoo.data.show import describe, sample_grid

    data = _prepare(args)
    print(describe(data, n_examples=args.n, split=args.split))
    if data.spec.is_pixels:
        out = Path(args.out) if args.out else data.path.parent / "show" / f"{data.path.name}-{args.split}.png"
        print(f"sample grid: {sample_grid(data, out, split=args.split, n=args.grid)}")
    return 0


def _add_generator(gen, name: str) -> None:
    spec = get_task(name)
    cls = spec.generator.config_class
    defaults = dataclasses.asdict(spec.generator_config(spec.default_config()))
    g = gen.add_parser(name, help=spec.generator.summary or f"generate {name}",
                       description=f"Generate {name} offline ({spec.summary}): {spec.generator.summary}.")
    g.add_argument("--out", required=True, help="root folder the task folder is written under")
    for f in dataclasses.fields(cls):
        kind = {"int": int, "float": float, "str": str}.get(getattr(f.type, "__name__", f.type), str)
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=None,
                       help=f"{f.metadata.get('help', f.name)} (default: {defaults[f.name]})")
    g.add_argument("--overwrite", action="store_true", help="replace an existing generated set in that folder")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_generate, generator=name)


def add_data_parser(subparsers) -> None:
    """Add ``data {locate,generate,prepare,show}`` to an argparse subparsers object."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    data = subparsers.add_parser("data", help="LRA data: locate, generate, prepare (cache), show",
                                 description="Long Range Arena data: find the official files, generate tasks "
                                 "offline, build the processed cache, inspect it.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args, _p=data: (_p.print_help(), 0)[1])

    p = sub.add_parser("locate", help="print the folder found for each task under ROOT", formatter_class=fmt)
    p.add_argument("root", help="folder to search")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="task fields that name the files (e.g. contour_length=9, file_prefix=basic), for every "
                   "task that has them")
    p.add_argument("--max-depth", type=int, default=5, help="folder levels searched below ROOT")
    p.set_defaults(func=_cmd_locate)

    generators = [n for n in task_names() if get_task(n).generator is not None]
    p = sub.add_parser("generate", help=f"generate a task offline ({', '.join(generators)})")
    gen = p.add_subparsers(dest="generator", metavar="{" + ",".join(generators) + "}")
    p.set_defaults(func=lambda args, _p=p: (_p.print_help(), 0)[1])
    for name in generators:
        _add_generator(gen, name)

    p = sub.add_parser("prepare", help="build (or check) the processed cache of a task", formatter_class=fmt)
    _common_prepare_args(p)
    p.add_argument("--verify", action="store_true", help="check the full SHA-256 of a cached entry")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("show", help="sizes, length statistics, decoded examples (PNG grid for images)",
                       formatter_class=fmt)
    _common_prepare_args(p)
    p.add_argument("-n", type=int, default=3, help="examples printed")
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="which split to show")
    p.add_argument("--grid", type=int, default=16, help="images in the PNG grid (pixel tasks)")
    p.add_argument("--out", help="PNG grid path (default: CACHE_DIR/show/<entry>-<split>.png)")
    p.set_defaults(func=_cmd_show)
