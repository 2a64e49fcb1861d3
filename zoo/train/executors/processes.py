"""``execution.executor=processes``: several ``zoo train`` processes at a time, spread over the GPUs.

``runs_per_gpu`` processes per GPU (``CUDA_VISIBLE_DEVICES`` set per process), or ``cpu_workers`` at a
time without GPUs (the cores shared out through ``OMP_NUM_THREADS``, which ``train.threads``
follows); each writes its output to ``runs/<run name>.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from zoo.train.executors.base import DiskError, disk_error, one_line, register


def command(r, folder: Path) -> list[str]:
    """The ``zoo train`` command line of one run (the layer fields rendered as a dotlist here)."""
    return [sys.executable, "-m", "zoo", "train", r.experiment, *r.dotlist(), "--out", str(folder / "runs"),
            "--no-progress"]


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError as exc:
        return str(exc)


def _stop(running: dict) -> None:
    for p, _ in running.values():
        p.send_signal(signal.SIGTERM)  # each run saves a checkpoint and exits
    for p, _ in running.values():
        p.wait()


@register("processes")
def run(todo: list, folder: Path, execution, progress: bool) -> dict[str, str]:
    """Run the queue over the slots; a run that exits non-zero is recorded (last line of its log)."""
    import torch

    gpus = list(execution.gpus) if execution.gpus is not None else list(range(torch.cuda.device_count()))
    slots = [g for g in gpus for _ in range(execution.runs_per_gpu)] or [None] * execution.cpu_workers
    threads = str(max(1, (os.cpu_count() or 1) // execution.cpu_workers))
    queue, running, failed = list(todo), {}, {}

    def stop_all(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop_all)
    try:
        while queue or running:
            for slot in [s for s in range(len(slots)) if s not in running][: len(queue)]:
                r = queue.pop(0)
                env = dict(os.environ)
                if slots[slot] is not None:
                    env["CUDA_VISIBLE_DEVICES"] = str(slots[slot])
                else:
                    env["OMP_NUM_THREADS"] = threads
                log = folder / "runs" / f"{r.run_name}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as fh:
                    p = subprocess.Popen(command(r, folder), stdout=fh, stderr=subprocess.STDOUT, env=env)
                running[slot] = (p, r)
                where = "gpu " + str(slots[slot]) if slots[slot] is not None else "cpu"
                print(f"zoo compare: started {r.run_name} ({where}, log {log})", file=sys.stderr)
            time.sleep(0.5)
            for slot, (p, r) in list(running.items()):
                if p.poll() is None:
                    continue
                del running[slot]
                print(f"zoo compare: {r.run_name} finished (exit {p.returncode})", file=sys.stderr)
                if p.returncode:
                    tail = _tail(folder / "runs" / f"{r.run_name}.log")
                    failed[r.run_name] = f"exit {p.returncode}: {one_line(tail)}"
                    if disk_error(tail):
                        _stop(running)
                        raise DiskError(f"{r.run_name}: cannot write under {folder}: {one_line(tail)}; free space "
                                        "or choose a writable --out, then run the same command again", failed)
    except KeyboardInterrupt:
        _stop(running)
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
    return failed
