"""``execution.executor=submitit``: a job array on a cluster (SLURM), or ``cluster: local`` here."""

from __future__ import annotations

import sys
from pathlib import Path

from zoo.train.executors.base import DiskError, disk_error, one_line, register


def _train_one(overrides: list, experiment: str, folder: str) -> dict:
    """The job a submitit worker runs (top-level: it is pickled)."""
    from zoo.train.runs import run_experiment

    return run_experiment(experiment, overrides, out=Path(folder) / "runs", progress=False)


@register("submitit")
def run(todo: list, folder: Path, execution, progress: bool) -> dict[str, str]:
    """Submit every run as one job of an array, wait for all; failed jobs are recorded, not fatal."""
    import submitit

    params = dict(execution.submitit)
    cluster = params.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=folder / "submitit", cluster=cluster)
    executor.update_parameters(**params)
    jobs = executor.map_array(_train_one, [r.dotlist() for r in todo], [r.experiment for r in todo],
                              [str(folder)] * len(todo))
    for job, r in zip(jobs, todo):
        print(f"zoo compare: submitted {r.run_name} as job {job.job_id}", file=sys.stderr)
    failed, disk = {}, None
    for job, r in zip(jobs, todo):
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001  one failed job must not hide the others
            failed[r.run_name] = one_line(str(exc))
            disk = disk or (r.run_name if disk_error(str(exc)) else None)
            print(f"zoo compare: {r.run_name} failed: {failed[r.run_name]}", file=sys.stderr)
    if disk:
        raise DiskError(f"{disk}: cannot write under {folder}: {failed[disk]}; free space or choose a writable "
                        "--out, then run the same command again (finished runs are kept)", failed)
    return failed
