"""Everything a run needs, built once from an :class:`~zoo.train.experiment.Experiment`.

:func:`build_run` sets the CPU threads, finds (or prepares) the data, builds the model with the
experiment's resolved layer and the task kind's head, the optimizer, the schedule and the batch
sources, and says what the data *is* (:func:`data_identity`: the prepared task's fingerprint and
protocol, compared on resume). The trainer (``zoo.train.trainer``) only runs the loop over it.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from zoo.models import TaskKind, build_model, get_kind
from zoo.train import checkpoint as ckpt
from zoo.train.batching import BatchSource
from zoo.train.distributed import Dist
from zoo.train.experiment import Experiment, ExperimentConfigError, check_device

__all__ = ["Run", "build_run", "data_identity", "default_threads"]


def default_threads() -> int:
    """``$OMP_NUM_THREADS`` when set, else half the cores, at most 4: small CPU models gain little
    from more threads, and oversubscribed cores lose much (on the shared 2-core machine a
    ``listops_small`` step took 63 ms with 1 thread and 380 ms with 2; docs/training.md)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else max(1, min(4, (os.cpu_count() or 1) // 2))


@dataclass
class Run:
    """The built parts of one run (see :func:`build_run`)."""

    exp: Experiment
    run_dir: Path
    dist: Dist
    device: torch.device
    precision: str
    threads: int
    progress: bool
    datasets: dict
    data: dict  # what the data is: task, fingerprint, protocol, source (data_identity)
    kind: TaskKind
    model: torch.nn.Module
    ddp: torch.nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: object
    sources: dict
    steps_per_epoch: int
    total_steps: int
    eval_batch_size: int
    params: list = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)


def _fingerprint_arrays(datasets: dict) -> str:
    """A digest of datasets passed in memory (their labels and lengths): different data, different digest."""
    h = hashlib.sha256()
    for split in sorted(datasets):
        d = datasets[split]
        for a in (getattr(d, "labels", None), getattr(d, "lengths", None)):
            if a is not None:
                h.update(split.encode() + memoryview(a).tobytes())
    return h.hexdigest()[:16]


def data_identity(task: str, prepared=None, datasets: dict | None = None) -> dict:
    """What the data is, independent of where it lies: the task, a fingerprint (the prepared entry's
    cache key: protocol, encoding and source files; or a digest of in-memory datasets) and the protocol."""
    if prepared is not None:
        return {"task": task, "fingerprint": str(prepared.manifest.get("key") or prepared.path.name),
                "protocol": prepared.manifest["build"]["protocol"], "source": prepared.source}
    return {"task": task, "fingerprint": _fingerprint_arrays(datasets), "protocol": None,
            "source": "datasets passed to Trainer"}


def _load_data(exp: Experiment, progress: bool, datasets: dict | None) -> tuple[dict, dict]:
    cfg = exp.cfg
    if datasets is not None:
        return datasets, data_identity(exp.task.name, datasets=datasets)
    from zoo.data import prepare

    generate = OmegaConf.to_container(cfg.data.generate, resolve=True) if cfg.data.generate_if_missing else None
    prepared = prepare(exp.task.name, cfg.data.root, options=exp.task_config, cache_dir=cfg.data.cache_dir,
                       progress=progress, generate=generate)
    return prepared.datasets(), data_identity(exp.task.name, prepared=prepared)


def _check_length(exp: Experiment, train_ds) -> None:
    if train_ds.max_len > exp.max_len:
        raise ExperimentConfigError(
            f"the training data is {train_ds.max_len} long but the experiment sizes the model for {exp.max_len} "
            f"(task.options of {exp.task.name}): raise the task's length option to {train_ds.max_len}")


def max_labelled(datasets: dict) -> int:
    """The most labelled positions (labels != -100) of any example of any split: the token head projects
    this many positions per row (a static shape for compiled and captured steps; 1 at least)."""
    return max([1] + [int((np.asarray(d.labels) != -100).sum(axis=1).max()) for d in datasets.values()
                      if np.asarray(d.labels).ndim == 2 and len(d)])


def _check_causal(exp: Experiment, train_ds) -> None:
    """Data declared causal (next-token style) needs a causal layer; experiments loaded for a causal
    task already are (``zoo.train.experiment``), datasets passed in memory are checked here."""
    if getattr(train_ds, "causal", False) and not getattr(exp.layer.config, "causal", False):
        raise ExperimentConfigError(
            f"the data is causal (each prediction may only see the past) but layer {exp.layer.name} is not: "
            "set layer.causal=true")


def build_run(exp: Experiment, run_dir: str | os.PathLike, datasets: dict | None = None) -> Run:
    """Threads, data, model, optimizer, schedule and batch sources of ``exp`` (nothing is trained).

    ``datasets``: optional ``{"train", "val", "test"}`` with the ``ArrayDataset`` interface instead of
    the prepared task (tests, custom data). The model is sized by the experiment (``exp.max_len``, the
    task's length), so the saved config and the built layer agree.
    """
    cfg, t = exp.cfg, exp.cfg.train
    threads = int(t.threads or default_threads())
    torch.set_num_threads(threads)
    dist = Dist.from_env()
    progress = bool(t.progress) and dist.main and sys.stderr.isatty()
    device = dist.device(check_device(t.device))
    precision = t.precision if t.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    datasets, data = _load_data(exp, progress, datasets)
    train_ds = datasets["train"]
    _check_length(exp, train_ds)
    dist.init(device, t.batch_size)
    ckpt.seed_all(t.seed)
    kind = get_kind(getattr(exp.task, "kind", None) or ("pair" if train_ds.is_pair else "classify"))
    _check_causal(exp, train_ds)
    model = build_model(exp.model_config(), exp.layer, n_classes=train_ds.n_classes, max_len=exp.max_len,
                        vocab_size=train_ds.vocab_size, kind=kind).to(device)
    if hasattr(model.head, "max_labelled"):  # a per-position head: one static count of projected positions
        model.head.max_labelled = max_labelled(datasets)
    from zoo.train.optim import build_optimizer, build_scheduler

    optimizer = build_optimizer(model, cfg.optim)
    ddp = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
           if dist.world > 1 else model)
    steps_per_epoch = math.ceil(len(train_ds) / t.batch_size)
    total_steps = int(cfg.optim.schedule_steps or t.epochs * steps_per_epoch)
    sources = {s: BatchSource(d, device, on_device=cfg.data.on_device, buckets=cfg.data.bucketing)
               for s, d in datasets.items()}
    return Run(exp=exp, run_dir=Path(run_dir), dist=dist, device=device, precision=precision, threads=threads,
               progress=progress, datasets=datasets, data=data, kind=kind, model=model, ddp=ddp, optimizer=optimizer,
               scheduler=build_scheduler(optimizer, cfg.optim, total_steps), sources=sources,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps,
               eval_batch_size=int(t.eval_batch_size or t.batch_size),
               params=[p for p in model.parameters() if p.requires_grad])
