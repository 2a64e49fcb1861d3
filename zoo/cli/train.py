"""``zoo train EXPERIMENT [KEY=VALUE ...]``: train one run, resumable (see docs/train.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  zoo train listops_small                          tiny CPU run; generates a small ListOps set if none is found
  zoo train listops_small layer=las model.n_layers=4 optim.lr=5e-4
  zoo train listops --data-root ~/lra --out runs   the official files, found under ~/lra
  zoo train listops_small --max-steps 50           stop after 50 steps in total (the schedule keeps its
                                                   full length); the same command with more continues
  torchrun --nproc_per_node=2 -m zoo train listops one run on 2 GPUs (DDP; rank 0 writes)

EXPERIMENT is a name in configs/experiments/ or a YAML path. Overrides are OmegaConf dotlist pairs
(task.*, layer.*, model.*, optim.*, data.*, train.*), anywhere on the line; `layer=NAME` /
`task=NAME` replace the whole section. The run folder is OUT/<experiment>-<layer>[-<digest of the
other changed keys>] (or OUT/<train.run_name>); it gets config.yaml, checkpoint.pt (and the previous
one), best.pt, metrics.jsonl, curve.png, summary.json, tensorboard/. If it holds a checkpoint the
run resumes from it; Ctrl-C or SIGTERM saves one first (exit 130 / 143).
Exit codes: 0 done, 2 bad input (one line says how to fix it), 3 the loss diverged (NaN/inf).
"""


def _cmd_train(args) -> int:
    from zoo.train import run_experiment

    summary = run_experiment(args.experiment, args.overrides, out=args.out, data_root=args.data_root,
                             resume=True if args.resume else None, max_steps=args.max_steps,
                             progress=False if args.no_progress else None)
    print(_brief(summary))
    return 0


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _brief(s: dict) -> str:
    """A few lines of the summary: accuracies, size, time, where the whole of it is."""
    chance = f" (chance {_pct(s['chance_acc'])})" if s.get("chance_acc") is not None else ""
    wall = s.get("wall_seconds")
    return "\n".join([
        f"{s.get('task')} / {s.get('layer')}: {s.get('status')}",
        f"  test acc  {_pct(s.get('test_acc'))}{chance}",
        f"  val acc   {_pct(s.get('best_val_acc'))} (best, step {s.get('best_step')})",
        f"  params    {s.get('params', 0):,}",
        f"  time      {s.get('train_seconds')} s training, {wall if wall is not None else '-'} s in all, "
        f"{s.get('steps')} steps",
        f"  summary   {Path(s.get('run_dir', '.')) / 'summary.json'}",
    ])


def add_train_parser(sub) -> None:
    from zoo.cli.common import positive_int

    p = sub.add_parser("train", help="train a model on an LRA task (experiment YAML + overrides), resumable",
                       description="Train an encoder with a registry layer on an LRA task.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="experiment name (configs/experiments/NAME.yaml) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, anywhere on the line, e.g. optim.lr=1e-3 layer=las")
    p.add_argument("--data-root", help="folder searched for the task's files (data.root)")
    p.add_argument("--out", default="runs", help="runs folder (default: runs)")
    p.add_argument("--resume", action="store_true", help="require a checkpoint in the run folder and continue it "
                   "(without the flag an existing checkpoint is resumed automatically)")
    p.add_argument("--max-steps", type=positive_int, help="stop after N optimizer steps in total (train.max_steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)
