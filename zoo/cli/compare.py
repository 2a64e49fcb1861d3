"""``zoo compare COMPARISON [KEY=VALUE ...]``: train a grid of layers x seeds and report them side by side."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  zoo compare listops_small                          the CPU grid of `make run` (generated ListOps, 4 layers x 2 seeds)
  zoo compare listops_small seeds=[0,1,2] budget.epochs=4
  zoo compare listops_small "sweep={optim.lr: [3e-4, 1e-3]}"      an lr sweep; the table keeps the best lr by val
  zoo compare listops_paper execution.runs_per_gpu=3 --out results     paper-settings ListOps on the GPUs
  zoo compare listops_paper "only=[vanilla,las,s4d]" --out results      three of its layers, each with its settings
  zoo compare listops_paper execution.executor=submitit execution.submitit.cluster=slurm \\
      execution.submitit.slurm_partition=gpu execution.submitit.timeout_min=600
  zoo compare listops_paper --export docs/results --out results   finished runs, small, into the committed folder
  zoo compare listops_paper --report-only --out docs/results      the report of the committed runs, nothing trained

COMPARISON is a name in configs/comparisons/ or a YAML path; overrides are OmegaConf dotlist pairs
(experiment, layers, seeds, budget.*, baseline, overrides, only, sweep, execution.*). Every run is a
resumable `zoo train` run folder under OUT/<comparison>/runs/ (OUT defaults to runs/, as in `make
run`); run the same command again after a stop to resume the unfinished runs (finished ones are
skipped). A failed run is recorded (failed.json, the report) and the others go on (exit 1 at the
end); a full or read-only disk stops the grid (exit 2). The report: OUT/<comparison>/table.md,
results.json, curves.png, cost.png. --export DEST copies each finished run's summary.json, config.yaml
and thinned metrics.jsonl (no checkpoints) into DEST/<comparison>/runs/, keeping the runs already
there (a run whose config differs from a committed one of the same name is refused: exit 2);
--report-only rebuilds the report from the run files under OUT/<comparison>/runs/ alone.
"""


def _cmd_compare(args) -> int:
    from zoo.train.compare import load_comparison, run_grid
    from zoo.train.executors import DiskError

    cfg, name = load_comparison(args.comparison, args.overrides)
    if args.export is not None or args.report_only:
        try:
            return _cmd_export(cfg, name, args) if args.export is not None else _cmd_report_only(cfg, name, args)
        except OSError as exc:  # a full or unwritable disk; a missing file is answered by main()
            if isinstance(exc, FileNotFoundError):
                raise
            print(f"zoo compare: error: cannot write {exc.filename or 'the report'}: {exc.strerror or exc}; free "
                  "space or choose a writable folder (the runs already there are untouched)", file=sys.stderr)
            return 2
    try:
        folder = run_grid(cfg, name, args.out, progress=not args.no_progress)
    except DiskError as exc:  # the grid stopped cleanly: finished runs and checkpoints are kept
        print(f"zoo compare: error: {exc}", file=sys.stderr)
        return 2
    failed = folder / "failed.json"
    return 1 if failed.exists() and json.loads(failed.read_text()) else 0


def _cmd_report_only(cfg, name: str, args) -> int:
    from zoo.train.compare import report_only

    report_only(cfg, name, args.out)
    return 0


def _cmd_export(cfg, name: str, args) -> int:
    from zoo.train.export import export_runs

    added, refused = export_runs(cfg, name, args.out, args.export)
    print(f"zoo compare: {name}: exported {len(added)} run(s) into {args.export}/{name}"
          + (f", refused {len(refused)}: {', '.join(refused)}" if refused else ""), file=sys.stderr)
    return 2 if refused else 0


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="train every listed layer (and seed) under one budget; one table + plots",
                       description="Train a grid of layers x seeds on an LRA experiment under the same budget and "
                       "report accuracy and cost side by side.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("comparison", help="comparison name (configs/comparisons/NAME.yaml) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="comparison overrides, anywhere on the line")
    p.add_argument("--out", default="runs", help="output folder, the same as `make run` (default: runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--report-only", action="store_true", help="rebuild the report from the run folders under "
                      "OUT/<comparison>/runs (summary, config, metrics each), training nothing")
    mode.add_argument("--export", metavar="DEST", help="copy the finished runs under OUT/<comparison>/runs into "
                      "DEST/<comparison>/runs in committed form (no checkpoints; metrics thinned), keeping DEST's runs")
    p.set_defaults(func=_cmd_compare)
