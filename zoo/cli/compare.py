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

COMPARISON is a name in configs/comparisons/ or a YAML path; overrides are OmegaConf dotlist pairs
(experiment, layers, seeds, budget.*, baseline, overrides, only, sweep, execution.*). Every run is a
resumable `zoo train` run folder under OUT/<comparison>/runs/ (OUT defaults to runs/, as in `make
run`); run the same command again after a stop to resume the unfinished runs (finished ones are
skipped). A failed run is recorded (failed.json, the report) and the others go on (exit 1 at the
end); a full or read-only disk stops the grid (exit 2). The report: OUT/<comparison>/table.md,
results.json, curves.png, cost.png.
"""


def _cmd_compare(args) -> int:
    from zoo.train.compare import load_comparison, run_grid

    from zoo.train.executors import DiskError

    cfg, name = load_comparison(args.comparison, args.overrides)
    try:
        folder = run_grid(cfg, name, args.out, progress=not args.no_progress)
    except DiskError as exc:  # the grid stopped cleanly: finished runs and checkpoints are kept
        print(f"zoo compare: error: {exc}", file=sys.stderr)
        return 2
    failed = folder / "failed.json"
    return 1 if failed.exists() and json.loads(failed.read_text()) else 0


def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="train every listed layer (and seed) under one budget; one table + plots",
                       description="Train a grid of layers x seeds on an LRA experiment under the same budget and "
                       "report accuracy and cost side by side.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("comparison", help="comparison name (configs/comparisons/NAME.yaml) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="comparison overrides, anywhere on the line")
    p.add_argument("--out", default="runs", help="output folder, the same as `make run` (default: runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)
