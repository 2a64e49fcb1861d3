"""``summary.json``: what a run did, in one file (its status, accuracies, times, speed, data, threads).

``wall_seconds`` is the whole run of this process (build, warm-up and compilation, training,
evaluation); ``train_seconds`` the optimizer steps only. ``chance_acc`` is the accuracy of always
answering the test split's majority class (weighted by example weights), the floor a table compares with.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from zoo._io import atomic_write_text
from zoo.train.metrics import plot_curves
from zoo.train.precompile import compile_count

__all__ = ["chance_accuracy", "write_summary"]


def chance_accuracy(dataset) -> float | None:
    """The majority class's share of ``dataset``, weighted by its example weights (1 each if it has none).

    Per-position labels ``(N, L)`` (token tasks): the most frequent label among the labelled positions
    (-100 = ignored), each position weighted by its example's weight."""
    labels = np.asarray(getattr(dataset, "labels", []))
    if labels.size == 0 or labels.ndim not in (1, 2):
        return None
    weights = np.asarray(getattr(dataset, "weights", None) if getattr(dataset, "weights", None) is not None
                         else np.ones(len(labels)), dtype=np.float64)
    if labels.ndim == 2:  # (N, L): one entry per labelled position
        weights = np.broadcast_to(weights[:, None], labels.shape)[labels != -100]
        labels = labels[labels != -100]
        if labels.size == 0:
            return None
    per_class = np.bincount(labels.astype(np.int64), weights=weights)
    return float(per_class.max() / max(weights.sum(), 1e-12))


def _throughput(tr) -> dict:
    graphs = None if tr.graph_status is None else {
        **tr.graph_status, "captured": len(tr.graphs.graphs) if tr.graphs else 0,
        "eager_steps": tr.graphs.eager_steps if tr.graphs else None}
    out = {**tr.meter.summary(), "cuda_graphs": graphs, "compiles": compile_count(),
           "compiles_after_warmup": (compile_count() - tr._compiles_at_warmup
                                     if tr._compiles_at_warmup is not None else None)}
    if tr.device.type == "cuda":
        out["peak_mem_mib"] = torch.cuda.max_memory_allocated(tr.device) / 2**20
    return out


def write_summary(tr, status: str, result: dict | None, tested: str) -> dict:
    """The summary of trainer ``tr``; rank 0 writes it (and curve.png) into the run folder."""
    pos, run, exp = tr.pos, tr.run, tr.exp
    summary = {
        "status": status, "task": exp.task.name, "layer": exp.layer.name, "params": run.n_params,
        "steps": pos.step, "total_steps": tr.total_steps, "epochs_completed": pos.epoch,
        "best_val_acc": pos.best_val_acc, "best_step": pos.best_step,
        "test_acc": result["acc"] if result else None, "test_loss": result["loss"] if result else None,
        "test_weights": tested if result else None, "chance_acc": chance_accuracy(run.datasets.get("test")),
        "train_seconds": round(pos.train_seconds, 2), "eval_seconds": round(tr.eval_seconds, 2),
        "warmup_seconds": round(tr.warmup_seconds, 2), "wall_seconds": round(tr.wall_seconds(), 2),
        **_throughput(tr), "kernel": tr.kernels, "memory_estimate": tr.memory,
        "device": str(tr.device), "precision": run.precision, "threads": run.threads, "world_size": tr.dist.world,
        "data_source": run.data["source"], "data_protocol": run.data["protocol"],
        "data_fingerprint": run.data["fingerprint"],
        "sizes": {s: len(d) for s, d in run.datasets.items()}, "run_dir": str(tr.run_dir),
    }
    if tr.dist.main:
        folder = tr.folder
        summary["curve"] = str(plot_curves(folder.metrics, folder.curve,
                                           f"{exp.task.name} / {exp.layer.name} ({pos.step} steps)"))
        text = json.dumps(summary, indent=2, default=str) + "\n"
        folder.write(folder.summary_path, lambda p: atomic_write_text(p, text))
        if tr.log is not None:
            tr.log.close()
    return summary
