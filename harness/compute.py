"""Training compute counted from what ran: every forward pass of the modules a method uses, while it trains.

A method's cost is not a constant: TRADES' and PGD-AT's attack steps, a teacher's passes, candidate
batches scored and thrown away and a pre-training in `prepare_model` all depend on its config. The meter
watches the modules a run uses (the model, the teacher, auxiliary modules, modules the method holds) and,
while `counting()`, adds for each outermost forward call: samples x forward FLOPs per sample (measured once
per module and input shape with `forward_flops`) x 3 when the output can be back-propagated (one forward,
a backward of twice its cost: training passes and attack steps' input gradients alike), else x 1. FLOPs
are 2 x multiply-adds; element-wise tensor work outside modules (a loss, an EMA) is not counted.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.hooks import RemovableHandle

from harness.evaluation.efficiency import forward_flops

BACKWARD_FACTOR = 3.0  # forward + backward (about twice the forward) for a pass whose output gets gradients


class ComputeMeter:
    """Counts the FLOPs of the forward (and implied backward) passes of the watched modules."""

    def __init__(self) -> None:
        self._depth = 0  # nesting of watched modules' forwards: only the outermost call is counted
        self._hooks: list[RemovableHandle] = []
        self._watched: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self._per_sample: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], float]] = \
            weakref.WeakKeyDictionary()
        # (module, input shape) -> passes x samples since the last `take`; priced there, outside the method's
        # code (measuring inside a forward would trip a method's own hooks on the model)
        self._pending: dict[tuple[int, tuple[int, ...]], tuple[nn.Module, float]] = {}

    def watch(self, modules: Iterable[nn.Module | None]) -> None:
        """Count the forwards of these modules from now on (watching one twice changes nothing)."""
        self._watched.update(module for module in modules if module is not None)

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Count the watched modules' forwards inside this block (a training step, a method's task-end work).

        The hooks are global and live only inside the block, so no module carries one: a method's copy of
        the model (an EMA teacher, a snapshot) is a plain module, counted if the method holds it."""
        if self._hooks:  # already counting
            yield
            return
        self._hooks = [register_module_forward_pre_hook(self._enter),
                       register_module_forward_hook(self._leave, always_call=True)]
        try:
            yield
        finally:
            for hook in self._hooks:
                hook.remove()
            self._hooks, self._depth = [], 0

    def _enter(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if _counted_as(module) in self._watched:
            self._depth += 1

    def take(self) -> float:
        """The FLOPs of the passes counted since the last `take` (call it outside any forward)."""
        pending, self._pending = self._pending, {}
        return sum(weighted * self._flops_per_sample(module, shape)
                   for (_, shape), (module, weighted) in pending.items())

    def _leave(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        module = _counted_as(module)
        if module not in self._watched:
            return
        self._depth -= 1  # also after a forward that raised (always_call): then output is None, nothing ran
        if self._depth > 0 or output is None or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        images = inputs[0]
        passes = BACKWARD_FACTOR if _has_gradient(output) else 1.0
        key = (id(module), tuple(images.shape[1:]))
        _, weighted = self._pending.get(key, (module, 0.0))
        self._pending[key] = (module, weighted + passes * images.shape[0])

    def _flops_per_sample(self, module: nn.Module, shape: tuple[int, ...]) -> float:
        known = self._per_sample.setdefault(module, {})
        if shape not in known:
            known[shape] = float(forward_flops(module, shape))  # `take` runs outside counting()
        return known[shape]


def _counted_as(module: nn.Module) -> nn.Module:
    """The module a call counts as: itself, or the model a stand-in runs (the engine's compiled forward,
    inside which no module hook fires, names it in `counted_as`)."""
    return getattr(module, "counted_as", module)


def _has_gradient(output: Any) -> bool:
    """Whether a backward can run through the output: gradients on, and the output needs them."""
    tensor = output if isinstance(output, torch.Tensor) else next(
        (item for item in (output if isinstance(output, tuple | list) else ()) if isinstance(item, torch.Tensor)),
        None)
    return torch.is_grad_enabled() and tensor is not None and tensor.requires_grad


def module_attributes(owner: object) -> list[nn.Module]:
    """The modules an object holds as attributes (a method's EMA teacher, its snapshot of the model)."""
    return [value for value in vars(owner).values() if isinstance(value, nn.Module)]
