"""One optimizer step, run eagerly or replayed from a CUDA graph (one graph per batch shape).

At LRA sizes (width 256, a few thousand tokens per sequence) a training step is a couple of
thousand small kernels, and the CPU launching them, not the GPU running them, sets the step time
(docs/training.md). A CUDA graph records the whole step once per batch shape, forward, backward,
gradient clipping and the AdamW update, and replays it with one launch. Batches come in a bounded
set of shapes (``zoo.train.batching``), so a run captures a dozen graphs at most, before its first
step.

:func:`optimizer_step` is the one definition of a step; :class:`GraphedSteps` captures exactly it.
What a capture needs, and what this module arranges:

* static inputs: each graph owns buffers that every batch of its shape is copied into;
* no host syncs inside: attention runs under :func:`zoo.functional.capture.graph_safe`, where the
  dispatcher picks kernels that need no host data (FlexAttention with a block mask built from
  tensor ops, instead of xformers' varlen packing, whose lengths are a host sync);
* the optimizer in device memory: AdamW with ``capturable=True``, its state created before the
  capture (a fresh run's zeros, exactly what its first eager step would create), and the learning
  rate a device tensor that the scheduler's value is written into before each replay;
* one memory pool shared by the graphs (they never run concurrently, and every output a graph
  leaves is copied out before another graph runs);
* the run's random streams untouched by the warm-up and the capture (forked), so dropout draws
  continue from the checkpointed generator state on resume.

Graphs are off (the step runs eagerly, the reason goes to ``summary.json``) on the CPU, under DDP
(its gradient all-reduce is not captured here), for optimizers other than torch's Adam / AdamW,
and under ``train.cuda_graphs=false``.
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from zoo.functional.capture import graph_safe
from zoo.models.kinds import ClassifyKind

_CLASSIFY = ClassifyKind().loss_terms

__all__ = ["GraphedSteps", "graphs_unavailable", "optimizer_step", "weighted_loss"]


def optimizer_step(model, params: Sequence[torch.Tensor], optimizer, inputs, masks, labels, weights, scale,
                   grad_clip: float, autocast: Callable, loss_terms: Callable = _CLASSIFY) -> torch.Tensor:
    """Forward, the task kind's weighted loss, backward, clipping, ``optimizer.step()``.

    ``weights`` are 1 for real rows and 0 for filler rows; ``scale`` (a float or a 0-d tensor)
    turns the weighted sum into the mean over the scored labels of the global batch (its real rows,
    or its labelled positions for a per-position kind); ``loss_terms`` is
    the task kind's (``zoo.models.kinds.TaskKind.loss_terms``, shared with evaluation). Returns the
    detached ``(loss, correct rows, gradient norm)`` as one ``(3,)`` fp32 device tensor (no host sync).
    """
    loss, terms = weighted_loss(model, inputs, masks, labels, weights, scale, autocast, loss_terms)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    return torch.stack([loss.detach(), terms[1].detach(), norm.detach().float()])


def weighted_loss(model, inputs, masks, labels, weights, scale, autocast: Callable, loss_terms: Callable = _CLASSIFY):
    """``(loss_terms(...)[0] * scale, loss_terms(...))``: the weighted loss sum scaled to the batch mean
    (fp32), and the kind's ``(3,)`` terms (loss sum, correct, weight sum) of ``model(inputs, masks)``."""
    with autocast():
        logits = model(inputs, masks, labels)  # the labels pick a token head's positions (pooled heads ignore them)
    terms = loss_terms(logits, labels, weights)  # (3,)
    return terms[0] * scale, terms


def graphs_unavailable(device: torch.device, world: int, optimizer) -> str | None:
    """Why the step cannot be captured here (None: it can)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (this run is on {device.type})"
    if world > 1:
        return "DDP's gradient all-reduce is not captured (the step runs eagerly under torchrun)"
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return (f"the optimizer is {type(optimizer).__module__}.{type(optimizer).__name__}; only torch.optim.Adam / "
                "AdamW run in a CUDA graph here (capturable=True)")
    if any(g.get("fused") or g.get("differentiable") for g in optimizer.param_groups):
        return "fused / differentiable Adam options are not captured here"
    return None


def _capturable_adam(optimizer) -> None:
    """AdamW with ``capturable=True`` and every state tensor on the device, created now if missing:
    the zeros (and step 0) a fresh parameter's first eager step would create."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        for p in group["params"]:
            st = optimizer.state[p]
            if not st:
                st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            elif st["step"].device != p.device:
                st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


@contextlib.contextmanager
def _device_lrs(optimizer, lrs: list[torch.Tensor]):
    """During the capture, each group's learning rate is its device tensor (read at every replay)."""
    floats = [g["lr"] for g in optimizer.param_groups]
    for g, t in zip(optimizer.param_groups, lrs):
        g["lr"] = t
    try:
        yield
    finally:
        for g, v in zip(optimizer.param_groups, floats):
            g["lr"] = v


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    masks: list[torch.Tensor | None]
    labels: torch.Tensor
    weights: torch.Tensor
    scale: torch.Tensor
    out: torch.Tensor  # (3,) loss, correct, grad norm: overwritten by every replay


class GraphedSteps:
    """:func:`optimizer_step` captured once per batch shape, replayed for every batch of that shape.

    Args:
        model, optimizer, grad_clip, loss_terms: as for :func:`optimizer_step` (``optimizer``: torch Adam / AdamW;
            it is switched to ``capturable=True`` and its state is created).
        autocast: ``autocast(cache=False)`` -> the autocast context of the run (no weight-cast cache
            inside a capture).
        max_graphs: shapes beyond this many run eagerly (a pair task can have many length pairs).
    """

    def __init__(self, model, optimizer, *, grad_clip: float, autocast: Callable, device: torch.device,
                 max_graphs: int = 32, loss_terms: Callable = _CLASSIFY) -> None:
        self.model, self.optimizer, self.grad_clip, self.autocast = model, optimizer, grad_clip, autocast
        self.loss_terms = loss_terms
        self.device, self.max_graphs = device, max_graphs
        self.params = [p for p in model.parameters() if p.requires_grad]
        _capturable_adam(optimizer)
        self.lrs = [torch.tensor(float(g["lr"]), dtype=torch.float32, device=device) for g in optimizer.param_groups]
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream(device)
        self.graphs: dict[tuple, _Graph] = {}
        self.eager_steps = 0

    @staticmethod
    def key(inputs, masks) -> tuple:
        return tuple((tuple(x.shape), x.dtype, m is not None) for x, m in zip(inputs, masks))

    def _step(self, inputs, masks, labels, weights, scale, cache: bool = True) -> torch.Tensor:
        return optimizer_step(self.model, self.params, self.optimizer, inputs, masks, labels, weights, scale,
                              self.grad_clip, lambda: self.autocast(cache=cache), self.loss_terms)

    def capture(self, inputs, masks, labels, weights) -> None:
        """Record the step for the shape of this batch (its values only fill the static buffers)."""
        key = self.key(inputs, masks)
        if key in self.graphs or len(self.graphs) >= self.max_graphs:
            return
        st = _Graph(torch.cuda.CUDAGraph(), [x.clone() for x in inputs], [m if m is None else m.clone() for m in masks],
                    labels.clone(), weights.clone(), torch.ones((), dtype=torch.float32, device=self.device),
                    torch.empty(0))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[self.device]), graph_safe():
            # warm-up on the capture stream: kernels chosen and compiled, lazy state created (grads discarded)
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                weighted_loss(self.model, st.inputs, st.masks, st.labels, st.weights, st.scale,
                              lambda: self.autocast(cache=False), self.loss_terms)[0].backward()
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            self.optimizer.zero_grad(set_to_none=True)
            gc.collect()  # no collection during the capture: freeing another (dead) graph there invalidates it
            gc.disable()
            try:
                with _device_lrs(self.optimizer, self.lrs), torch.cuda.graph(st.graph, pool=self.pool,
                                                                             stream=self.stream):
                    st.out = self._step(st.inputs, st.masks, st.labels, st.weights, st.scale, cache=False)
            finally:
                gc.enable()
        self.graphs[key] = st

    def __call__(self, inputs, masks, labels, weights, scale: float) -> torch.Tensor:
        """One optimizer step on this batch: ``(3,)`` loss, correct, grad norm (a fresh device tensor)."""
        st = self.graphs.get(self.key(inputs, masks))
        if st is None:
            self.capture(inputs, masks, labels, weights)
            st = self.graphs.get(self.key(inputs, masks))
        if st is None:  # past max_graphs: this shape runs eagerly (same step, same optimizer)
            self.eager_steps += 1
            self.model.train()  # (a replay needs no mode: the captured step is the training one)
            return self._step(inputs, masks, labels, weights, scale)
        for dst, src in zip(st.inputs, inputs):
            dst.copy_(src)
        for dst, src in zip(st.masks, masks):
            if dst is not None:
                dst.copy_(src)
        st.labels.copy_(labels)
        st.weights.copy_(weights)
        st.scale.fill_(scale)
        for t, g in zip(self.lrs, self.optimizer.param_groups):
            t.fill_(g["lr"])
        st.graph.replay()
        return st.out.clone()
