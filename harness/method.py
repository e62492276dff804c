"""The method plugin contract: what a training method declares and the hooks the engine calls.

A method computes its loss (and, if it must, changes the model); the engine owns the loop,
optimiser, devices, precision, Ray and timing. The base class *is* the plain ERM baseline, so a
method overrides only the hooks its paper changes. New context fields never break old plugins:
hooks receive one `TrainContext` object, not positional arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from harness.registry import Registry
from harness.search_space import Dimension


@dataclass(frozen=True)
class MethodInfo:
    """Who a method is, and what it needs from the harness."""

    name: str
    summary: str
    paper: str = ""
    needs_teacher: bool = False   # the harness trains the benchmark's teacher and passes it in ctx
    modifies_model: bool = False  # `prepare_model` changes the architecture
    stochastic: bool = False      # predictions are random at test time (attacks must use EOT)
    cost_factor: float = 1.0      # rough forward+backward passes per step, relative to ERM


class MethodConfig(BaseModel):
    """Base of every method's hyper-parameters: frozen, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class TrainContext:
    """What a hook may know about the run. Read-only; the engine adds fields, never removes them."""

    step: int
    total_steps: int
    epoch: int
    num_classes: int
    device: torch.device
    teacher: nn.Module | None = None
    generator: torch.Generator | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return self.step / max(1, self.total_steps)


@dataclass
class LossOutput:
    """The loss to minimise plus named parts to log (detached by the engine)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None  # the clean-input logits, when the method computed them


class Method:
    """Empirical risk minimisation: cross-entropy on the labels. Subclass and override hooks."""

    info: ClassVar[MethodInfo]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    search_space: ClassVar[Mapping[str, Dimension]] = {}

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        """Change the architecture before training (default: unchanged)."""
        return model

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx: TrainContext
    ) -> LossOutput:
        """The loss for one batch of augmented images in [0, 1] (default: cross-entropy)."""
        logits = model(images)
        return LossOutput(F.cross_entropy(logits.float(), labels), logits=logits)


MethodFactory = Callable[..., Method]
METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass to the registry under `cls.info.name`."""
    METHODS.add(cls.info.name, cls)
    return cls


def build_method(name: str, overrides: Mapping[str, Any] | None = None) -> Method:
    """Instantiate a registered method with its config defaults updated by `overrides`."""
    from harness.plugins import discover_methods

    discover_methods()  # a fresh Ray worker has imported no plugin yet
    cls = METHODS.get(name)
    return cls(cls.Config(**dict(overrides or {})))
