"""Training on the Long Range Arena: experiments, the loop, checkpoints, metrics, comparison grids.

    from zoo.train import run_experiment
    summary = run_experiment("listops_small", ["layer=las"], out="runs")   # resumable; returns summary.json
"""

from zoo.train.build import build_run
from zoo.train.checkpoint import CheckpointError
from zoo.train.experiment import Experiment, ExperimentConfigError, load_experiment
from zoo.train.folder import RunFolder, RunLockedError, RunWriteError
from zoo.train.memory import MemoryEstimateError
from zoo.train.optim import build_optimizer, build_scheduler, param_groups
from zoo.train.runs import run_experiment
from zoo.train.stopping import Interrupted, TrainingDiverged
from zoo.train.trainer import Trainer

__all__ = [
    "CheckpointError",
    "Experiment",
    "ExperimentConfigError",
    "Interrupted",
    "MemoryEstimateError",
    "RunFolder",
    "RunLockedError",
    "RunWriteError",
    "Trainer",
    "TrainingDiverged",
    "build_optimizer",
    "build_run",
    "build_scheduler",
    "load_experiment",
    "param_groups",
    "run_experiment",
]
