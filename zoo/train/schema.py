"""The experiment's schema: the typed sections of an experiment YAML and the keys a resume may change.

``task`` (:class:`TaskConfig`), ``layer`` (a registry layer: name + fields), ``model``
(:class:`zoo.models.ModelConfig`), ``optim`` (:class:`OptimConfig`), ``data`` (:class:`DataConfig`)
and ``train`` (:class:`TrainConfig`); loaded and validated by :mod:`zoo.train.experiment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import MISSING

from zoo.base import config_field
from zoo.models import ModelConfig

__all__ = ["DataConfig", "ExperimentConfig", "OptimConfig", "RUNTIME_KEYS", "SECTIONS", "TaskConfig", "TrainConfig"]


@dataclass
class TaskConfig:
    """Which LRA task, and its protocol fields (the task's config dataclass: max_len, pixels, ...)."""

    name: str = config_field(MISSING, "a registered task: listops | text | retrieval | image | pathfinder | pathx")
    options: Dict[str, Any] = config_field({}, "task protocol fields (validated by the task's config)")


@dataclass
class DataConfig:
    """Where the data is, what to do when it is missing, and how batches are formed."""

    root: str = config_field("data", "folder searched for the task's files (the official layout; see docs/data.md)")
    cache_dir: Optional[str] = config_field(None, "processed-data cache (default: $ZOO_DATA_CACHE or ~/.cache/zoo/lra)")
    generate_if_missing: bool = config_field(False, "generate the task's data if it is not under root (tasks "
                                                    "with a generator: listops, pathfinder, pathx)")
    generate: Dict[str, Any] = config_field({}, "generator fields for generate_if_missing "
                                                "(zoo data generate TASK --help)")
    bucketing: bool = config_field(True, "length-aware batches: examples of similar length batched together, padded "
                                         "to a few shape buckets (False: uniformly shuffled batches)")
    on_device: str = config_field("auto", "keep the whole tokenised split on the training device: auto (when it "
                                          "is under 4 GiB) | true | false")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule, built by timm's factories."""

    opt: str = config_field("adamw", "timm optimizer name (timm.optim.list_optimizers())")
    lr: float = config_field(1e-3, "peak learning rate of the default groups")
    weight_decay: float = config_field(0.01, "weight decay of >= 2-D parameters (1-D: 0; mixer hooks: their own)")
    opt_kwargs: Dict[str, Any] = config_field({}, "extra optimizer arguments, e.g. {betas: [0.9, 0.98]}")
    sched: str = config_field("cosine", "timm scheduler: cosine | step | constant | poly | none ...")
    warmup_steps: int = config_field(0, "linear warm-up steps from warmup_lr")
    warmup_lr: float = config_field(1e-6, "learning rate at step 0 of the warm-up")
    min_lr: float = config_field(0.0, "floor of the schedule")
    schedule_steps: Optional[int] = config_field(None, "schedule length in steps (default: epochs * steps per epoch)")
    grad_clip: float = config_field(1.0, "clip the global gradient norm to this (0 = off)")


@dataclass
class TrainConfig:
    """The loop: length, batches, evaluation, checkpoints, device, logging."""

    epochs: int = config_field(10, "passes over the training split")
    batch_size: int = config_field(32, "training batch size (the global batch under torchrun)")
    eval_batch_size: Optional[int] = config_field(None, "evaluation batch size (default: batch_size)")
    max_steps: Optional[int] = config_field(None, "stop after this many optimizer steps in total; the learning-rate "
                                                  "schedule keeps its full length (run again with more to continue)")
    seed: int = config_field(0, "seeds the model init, the batch order and dropout")
    device: str = config_field("auto", "auto (cuda if available) | cpu | cuda | cuda:N")
    precision: str = config_field("auto", "auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32")
    checkpoint_every: int = config_field(500, "write checkpoint.pt every N steps (also at each epoch end, at the "
                                              "end and on Ctrl-C / SIGTERM)")
    eval_every: int = config_field(0, "also evaluate on val every N steps (0: at epoch ends only)")
    log_every: int = config_field(20, "append a training record to metrics.jsonl every N steps")
    progress: bool = config_field(True, "progress bars (shown only on a terminal)")
    run_name: Optional[str] = config_field(None, "run folder name under --out (default: experiment-layer[-digest])")
    warmup_compile: str = config_field("auto", "compile every shape bucket before the first step: auto (on CUDA) | "
                                               "true | false")
    cuda_graphs: str = config_field("auto", "replay each shape's training step from a CUDA graph "
                                            "(one launch per step): "
                                            "auto (on one CUDA GPU with Adam/AdamW) | true (required) | false")
    tensorboard: str = config_field("auto", "also log scalars to TensorBoard (RUN_DIR/tensorboard): auto (when the "
                                            "tensorboard package is installed) | true | false")
    wandb: bool = config_field(False, "also log to Weights & Biases (needs the wandb package; WANDB_* variables apply)")
    threads: Optional[int] = config_field(None, "torch CPU threads (default: $OMP_NUM_THREADS if set, else half the "
                                                "cores, at most 4); recorded in summary.json")


@dataclass
class ExperimentConfig:
    """task + layer + model + optim (+ data, train)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    layer: Dict[str, Any] = config_field({}, "registry layer config: name + fields")
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {"task": TaskConfig, "model": ModelConfig, "optim": OptimConfig, "data": DataConfig, "train": TrainConfig}

#: keys that may differ between a checkpoint's config and the resuming one (they do not change the run)
RUNTIME_KEYS = frozenset({
    "train.max_steps", "train.progress", "train.eval_batch_size", "train.device", "train.run_name",
    "train.warmup_compile", "train.cuda_graphs", "train.tensorboard", "train.wandb", "data.root", "data.cache_dir",
    "data.on_device",
    "train.threads",
})
