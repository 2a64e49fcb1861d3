"""``execution.executor=local``: the runs one after another in this process (the CPU default)."""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.train.executors.base import DiskError, disk_error, one_line, register


@register("local")
def run(todo: list, folder: Path, execution, progress: bool) -> dict[str, str]:
    """Train each run in turn; a failed run is recorded and the next one starts.

    Ctrl-C / SIGTERM saves the current run's checkpoint and stops the grid (re-raised); a full or
    read-only disk stops it too (:class:`DiskError`), since every later run would fail the same way.
    """
    from zoo.train.runs import run_experiment
    from zoo.train.stopping import Interrupted

    failed: dict[str, str] = {}
    for i, r in enumerate(todo, 1):
        print(f"zoo compare: [{i}/{len(todo)}] {r.run_name}", file=sys.stderr)
        try:
            run_experiment(r.experiment, r.dotlist(), out=folder / "runs", progress=progress)
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001  one failed run must not end the grid
            failed[r.run_name] = one_line(exc)
            if disk_error(exc):
                raise DiskError(f"{r.run_name}: cannot write under {folder}: {one_line(exc)}; free space or choose "
                                "a writable --out, then run the same command again (finished runs are kept)",
                                failed) from None
            print(f"zoo compare: {r.run_name} failed: {failed[r.run_name]}; going on with the others", file=sys.stderr)
    return failed
