"""A method plugin that raises at a chosen optimiser step, for the fault-injection tests.

Loaded through $HARNESS_PLUGINS, never shipped in `methods/`.
"""

from __future__ import annotations

import os

import torch
from pydantic import Field
from torch import nn

from harness.method import LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method


class FailsAtStepConfig(MethodConfig):
    step: int = Field(3, ge=0, description="the optimiser step at which training raises")
    seed: int | None = Field(None, description="raise only in the run of this seed (None: in every run)")


@register_method
class FailsAtStep(Method):
    info = MethodInfo(name="fails_at_step", summary="ERM that raises RuntimeError at step k (fault injection).")
    Config = FailsAtStepConfig

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        if ctx.step == self.config.step and self.config.seed in (None, ctx.seed):
            raise RuntimeError(f"injected failure at step {ctx.step}")
        return super().training_loss(model, images, labels, ctx)


class DiesOnceConfig(MethodConfig):
    step: int = Field(50, ge=0, description="the optimiser step at which the process dies")
    marker: str = Field(..., description="file created when dying; while it exists, the method trains normally")


@register_method
class DiesOnce(Method):
    """ERM whose training process kills itself once at step k, as a lost node or an OOM kill would."""

    info = MethodInfo(name="dies_once", summary="ERM that kills its own worker process once (fault injection).")
    Config = DiesOnceConfig

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        if ctx.step == self.config.step and not os.path.exists(self.config.marker):
            open(self.config.marker, "w").close()
            os._exit(1)  # no cleanup, no exception: the process is simply gone
        return super().training_loss(model, images, labels, ctx)
