"""The ``zoo`` command: list / describe / info / bench / train / compare / data.

Every layer is addressed by its registry name and every task by its task name; fields are
overridden with ``key=value`` pairs (OmegaConf dotlist syntax) anywhere on the line, e.g.
``zoo describe las n_heads=4 causal=true`` or ``zoo train listops --data-root X optim.lr=1e-3``.
Mistakes print one line and exit 2; a diverged run exits 3; Ctrl-C / SIGTERM exit 130 / 143
after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys

from zoo.cli.common import Parser

EPILOG = """\
examples:
  zoo list                                    every registered layer (built-ins and plugins)
  zoo describe las pool_size=5                the config schema, and the config after overrides
  zoo info                                    which attention backends run here, and why the others do not
  zoo train listops_small                     train an LRA experiment (configs/experiments/), resumable
  zoo train listops layer=las model.n_layers=6 --data-root ~/lra
  zoo compare listops_small                   train several layers x seeds, one table + plots (configs/comparisons/)
  zoo bench --quick                           forward+backward time and memory of every layer, side by side
  zoo bench --layers vanilla las s4d --lengths 1024 4096 --device cuda --dtype bf16 --out runs/bench
  zoo data generate listops --out data/       offline LRA data (`zoo data --help`)

Plugins: third-party layers register through the entry-point group `zoo.layers`;
set ZOO_DISABLE_PLUGINS=1 to skip them. See README.md.
"""


def build_parser() -> argparse.ArgumentParser:
    from zoo.cli.bench import add_bench_parser
    from zoo.cli.compare import add_compare_parser
    from zoo.cli.data import add_data_parser
    from zoo.cli.layers import add_layer_parsers
    from zoo.cli.train import add_train_parser

    parser = Parser(
        prog="zoo",
        description="Long-range sequence mixers (attention, LaS, S4D, long convolutions) behind one "
        "registry: list and configure them, inspect kernels, benchmark them side by side, train them on "
        "the Long Range Arena and compare the trained layers, prepare LRA data.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_layer_parsers(sub)
    add_bench_parser(sub)
    add_train_parser(sub)
    add_compare_parser(sub)
    add_data_parser(sub)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting ``key=value`` overrides stand anywhere on the line (after options too)."""
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if extra and (stray or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"zoo: warning: {message}\n"  # one line
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on CPU compiles
    prog = f"zoo {args.command}"
    try:
        return int(args.func(args) or 0)
    except BaseException as exc:  # noqa: BLE001 - sorted below; anything unknown is re-raised
        if isinstance(exc, BrokenPipeError):  # `zoo list | head`: the reader left, nothing to report
            _quiet_stdout()
            return 141
        code, line = _exit_for(exc, prog)
        if code is None:
            raise
        print(line, file=sys.stderr)
        return code


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again (Python's
    documented recipe for SIGPIPE)."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (captured): nothing to flush
        pass


def _exit_for(exc: BaseException, prog: str) -> tuple[int | None, str]:
    """The exit code and the one line for an exception a user can act on; ``(None, "")`` for a bug.

    The error classes are looked up only in the modules the command imported (``zoo list`` never
    imports the training stack, so none of its errors can occur there)."""
    def loaded(module: str, *names: str) -> tuple[type, ...]:
        mod = sys.modules.get(module)
        return tuple(c for c in (getattr(mod, n, None) for n in names) if isinstance(c, type))

    if isinstance(exc, loaded("zoo.train", "Interrupted")):
        return exc.exit_code, f"{prog}: {exc}"
    if isinstance(exc, loaded("zoo.train", "TrainingDiverged")):
        return 3, f"{prog}: error: {exc}"
    user = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, *loaded("registry", "RegistryError"),
            *loaded("zoo.data.errors", "TaskNotFoundError"), *loaded("zoo.train", "RunLockedError", "CheckpointError"))
    if isinstance(exc, user):
        return 2, f"{prog}: error: {str(exc).strip()}"
    if isinstance(exc, KeyboardInterrupt):
        return 130, f"{prog}: interrupted"
    return None, ""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
