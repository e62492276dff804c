"""Ghost batch normalisation (Hoffer, Hubara and Soudry, "Train longer, generalize better: closing the
generalization gap in large batch training of neural networks", NeurIPS 2017; catalogue T36).

In training mode every BatchNorm splits its batch into ghost batches of about `ghost_batch_size`
samples and normalises each with its own mean and variance, so a large batch sees the noisier
statistics of small ones; the running statistics are updated once per ghost batch, in order (our
reading of the paper's Algorithm 1). At test time it is the ordinary BatchNorm with those statistics.

The paper's other half is the "update-matched" regime: a large batch B_L trained for as many parameter
updates as the small-batch baseline B_S makes in its budget (so B_L / B_S times the epochs), with the
learning rate scaled by sqrt(B_L / B_S). With `large_batch` = B_L set, `adjust_settings` does exactly that:
B_S is the benchmark's batch size, the steps are `total_steps` at B_S, and the tuned lr is multiplied by
sqrt(B_L / B_S). The run's samples seen and FLOPs then show the regime's cost (B_L / B_S times ERM's).
With `large_batch` unset (the default) the engine's settings are unchanged and only the layer differs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.preconditions import LargeBatch
from harness.search_space import Choice
from methods._layers import replace_modules

if TYPE_CHECKING:
    from harness.train_settings import TrainSettings


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises ghost batches of at least `ghost_batch_size` samples separately."""

    def __init__(self, norm: nn.BatchNorm2d, ghost_batch_size: int) -> None:
        super().__init__(norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                         track_running_stats=norm.track_running_stats,
                         device=norm.running_mean.device if norm.running_mean is not None else None)
        self.load_state_dict(norm.state_dict())
        self.ghost_batch_size = ghost_batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ghosts = x.shape[0] // self.ghost_batch_size
        if not self.training or ghosts <= 1 or self.momentum is None:
            return super().forward(x)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
        chunks = [F.batch_norm(chunk, self.running_mean, self.running_var, self.weight, self.bias,
                               training=True, momentum=self.momentum, eps=self.eps)
                  for chunk in x.tensor_split(ghosts)]  # sizes differ by at most one sample
        return torch.cat(chunks)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch_size={self.ghost_batch_size}"


class GhostBNConfig(MethodConfig):
    ghost_batch_size: int = Field(32, ge=2, description="samples per ghost batch (the paper uses 128)")
    large_batch: int | None = Field(None, ge=2, description="B_L of the update-matched regime (None: regime off, "
                                    "train at the benchmark's batch size)")


def update_matched(settings: TrainSettings, num_samples: int, large_batch: int) -> TrainSettings:
    """Batch B_L, the small-batch baseline's number of updates, and the lr scaled by sqrt(B_L / B_S)."""
    small_batch = settings.batch_size
    if large_batch < small_batch:
        raise ValueError(f"large_batch ({large_batch}) must be at least the benchmark's batch size ({small_batch})")
    if large_batch > num_samples:
        raise ValueError(f"large_batch ({large_batch}) exceeds the {num_samples} training examples")
    return settings.replace(batch_size=large_batch, steps=settings.total_steps(num_samples), epochs=None,
                            lr=settings.lr * math.sqrt(large_batch / small_batch))


@register_method
class GhostBatchNorm(Method):
    """Swap every BatchNorm2d for a ghost BatchNorm."""

    info = MethodInfo(
        name="ghost_bn",
        summary="BatchNorm statistics over small ghost batches of each large batch (Hoffer et al.).",
        paper="Hoffer, Hubara, Soudry, Train longer, generalize better: closing the generalization gap "
              "in large batch training of neural networks, NeurIPS 2017",
        modifies_model=True,
        claim=Claim("ghost batch norm (with regime adaptation) closes the large-batch generalisation gap (qualitative)",
                    # the gap exists only at a large batch (the paper: 4096 against 128)
                    preconditions=(LargeBatch(size=1024, config_key="large_batch"),)),
    )
    Config = GhostBNConfig
    search_space = {"ghost_batch_size": Choice(choices=(16, 32, 64, 128))}

    def adjust_settings(self, settings: TrainSettings, ctx: TrainContext) -> TrainSettings:
        large_batch = self.config.large_batch
        return settings if large_batch is None else update_matched(settings, ctx.num_samples, large_batch)

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        size = self.config.ghost_batch_size
        if replace_modules(model, lambda m: type(m) is nn.BatchNorm2d, lambda n: GhostBatchNorm2d(n, size)) == 0:
            raise ValueError(f"{type(model).__name__} has no BatchNorm2d to turn into ghost batch norm")
        return model
