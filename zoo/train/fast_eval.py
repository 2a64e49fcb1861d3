"""Evaluation as fast as training: the eval-mode forward captured as one CUDA graph per batch shape.

Eagerly, an evaluation batch is a few hundred small kernel launches, and at LRA sizes the CPU
launching them sets the pace (as for the training step, ``zoo.train.step``). :class:`GraphedForward`
records ``model(inputs, masks)`` (eval mode, no gradients, the run's autocast, attention under
:func:`~zoo.functional.capture.graph_safe`) once per shape and replays it. The forward has no
randomness in eval mode, so a replay is the eager forward's values. Graphs live in their own memory
pool (never the training graphs': those keep parameters' gradients there), and shapes past
``max_graphs`` run eagerly. Off the GPU, :func:`forward` is the plain eager call.
"""

from __future__ import annotations

import gc
from typing import Callable, Sequence

import torch

from zoo.functional.capture import graph_safe

__all__ = ["GraphedForward", "evaluate_logits", "graphed_evaluate"]


class GraphedForward:
    """``model(inputs, masks)`` in eval mode, replayed from one CUDA graph per input shape.

    Args:
        model: the classifier (``forward(inputs, masks) -> (B, C)`` logits).
        autocast: ``autocast(cache=False)`` -> the run's autocast context (no weight-cast cache in a capture).
        device: the CUDA device.
        max_graphs: shapes beyond this many run eagerly.
    """

    def __init__(self, model, autocast: Callable, device: torch.device, max_graphs: int = 32) -> None:
        self.model, self.autocast, self.device, self.max_graphs = model, autocast, device, max_graphs
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream(device)
        self.graphs: dict[tuple, tuple] = {}  # key -> (graph, static inputs, static masks, static logits)
        self.eager_calls = 0

    @staticmethod
    def key(inputs, masks) -> tuple:
        return tuple((tuple(x.shape), x.dtype, m is not None) for x, m in zip(inputs, masks))

    def _forward(self, inputs, masks) -> torch.Tensor:
        with self.autocast(cache=False):
            return self.model(inputs, masks)  # (B, C)

    @torch.no_grad()
    def capture(self, inputs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]) -> None:
        """Record the forward for this batch's shape (its values only fill the static buffers)."""
        key = self.key(inputs, masks)
        if key in self.graphs or len(self.graphs) >= self.max_graphs:
            return
        xs = [x.clone() for x in inputs]
        ms = [m if m is None else m.clone() for m in masks]
        self.model.eval()
        graph = torch.cuda.CUDAGraph()
        with graph_safe():
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):  # warm-up: kernels chosen and compiled before the capture
                self._forward(xs, ms)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            gc.collect()
            gc.disable()
            try:
                with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
                    out = self._forward(xs, ms)
            finally:
                gc.enable()
        self.graphs[key] = (graph, xs, ms, out)

    @torch.no_grad()
    def __call__(self, inputs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Logits ``(B, C)`` of this batch (a fresh tensor, not the graph's buffer)."""
        masks = [None] * len(inputs) if masks is None else list(masks)
        key = self.key(inputs, masks)
        if key not in self.graphs:
            self.capture(inputs, masks)
        if key not in self.graphs:  # past max_graphs
            self.eager_calls += 1
            self.model.eval()
            return self._forward(inputs, masks)
        graph, xs, ms, out = self.graphs[key]
        for dst, src in zip(xs, inputs):
            dst.copy_(src)
        for dst, src in zip(ms, masks):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return out.clone()


def evaluate_logits(graphed: GraphedForward | None, model, inputs, masks, autocast: Callable) -> torch.Tensor:
    """The eval-mode logits of one batch: replayed when ``graphed`` is given, else the eager forward."""
    if graphed is not None:
        return graphed(inputs, masks)
    model.eval()
    with torch.no_grad(), autocast():
        return model(inputs, masks)


def graphed_evaluate(trainer, graphed: GraphedForward | None, split: str) -> dict:
    """``Trainer.evaluate`` with the forward replayed from ``graphed`` (``benchmarks/train_speed.py
    --graphed-eval`` binds it in place of ``trainer.evaluate``; not wired into the trainer: see
    docs/training.md)."""
    return type(trainer).evaluate(trainer, split, forward=lambda inputs, masks: evaluate_logits(
        graphed, trainer.model, inputs, masks, trainer._autocast))
