"""Optimiser parameter groups and timm's optimizer / scheduler factories (nothing LRA-specific).

Each mixer may declare optimizer groups through its ``param_groups()`` hook (e.g. S4D's state
space parameters want a small learning rate and no weight decay); the trainer asks every mixer
and never special-cases a layer.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = ["build_optimizer", "build_scheduler", "param_groups"]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups: the mixers' ``param_groups()`` hooks, then decay / no-decay for the rest.

    Every mixer (``model.mixers()``) is asked; a returned group *with options* (e.g. ``lr``,
    ``weight_decay``) is kept with those options (groups with equal options are merged); a group
    without options ("the rest") gets the default treatment: weight decay for parameters of two
    or more dimensions, none for biases, norms and other 1-D parameters.
    """
    claimed: dict[int, tuple] = {}
    special: dict[tuple, list] = {}
    for mixer in model.mixers():
        hook = getattr(mixer, "param_groups", None)
        groups = hook() if callable(hook) else None
        for g in groups or []:
            opts = tuple(sorted((k, v) for k, v in g.items() if k != "params"))
            if not opts:
                continue
            for p in g["params"]:
                if not p.requires_grad or id(p) in claimed:
                    continue
                claimed[id(p)] = opts
                special.setdefault(opts, []).append(p)
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in claimed:
            (decay if p.ndim >= 2 else no_decay).append(p)
    out = [{"name": "decay", "params": decay, "weight_decay": weight_decay},
           {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    for opts, ps in special.items():
        out.append({"name": "mixer:" + ",".join(f"{k}={v}" for k, v in opts), "params": ps, **dict(opts)})
    return [g for g in out if g["params"]]


def build_optimizer(model: torch.nn.Module, optim) -> torch.optim.Optimizer:
    """``timm.optim.create_optimizer_v2`` over :func:`param_groups`."""
    from timm.optim import create_optimizer_v2

    kwargs = optim.opt_kwargs
    kwargs = OmegaConf.to_container(kwargs, resolve=True) if isinstance(kwargs, DictConfig) else dict(kwargs)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return create_optimizer_v2(param_groups(model, optim.weight_decay), opt=optim.opt, lr=optim.lr,
                               weight_decay=optim.weight_decay, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, optim, total_steps: int):
    """``timm.scheduler.create_scheduler_v2`` counted in optimizer steps (``step_update(step)``)."""
    from timm.scheduler import create_scheduler_v2

    if optim.sched == "none":
        return None
    scheduler, _ = create_scheduler_v2(optimizer, sched=optim.sched, num_epochs=total_steps,
                                       warmup_epochs=optim.warmup_steps, warmup_lr=optim.warmup_lr,
                                       min_lr=optim.min_lr, step_on_epochs=False, updates_per_epoch=1)
    return scheduler
