"""WeightAlign (Shi, Li, Liu and van Gemert, "WeightAlign: Normalizing Activations by Weight Alignment",
ICPR 2020; catalogue T32).

Every convolution filter is re-parameterised by statistics computed within the filter, never over
samples: for filter i with N = C_in * k * k weights, mean mu_i and standard deviation sigma_i,

    W'_i = gamma_i * (W_i - mu_i) / (sqrt(N) * sigma_i)

so a zero-mean, unit-variance input gives zero-mean outputs of variance gamma_i^2 whatever the batch.
Assumptions (the exact scaling is marked BG in the catalogue; only the abstract was checked): gamma is
a learnable per-filter scale initialised to sqrt(2), the He gain for ReLU; with `batch_norm` (the
paper's WA+BN combination) the model's BatchNorms stay, without it each becomes a per-channel affine
(scale and shift, no statistics), which makes the whole model batch-size independent.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from harness.method import Claim, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import Choice
from methods._layers import replace_modules


class WeightAlignConv2d(nn.Conv2d):
    """A Conv2d whose filters are centred and scaled by their own statistics (same `weight` and `bias`)."""

    def __init__(self, conv: nn.Conv2d, eps: float = 1e-5) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        self.load_state_dict(conv.state_dict())
        self.gain = nn.Parameter(torch.full((conv.out_channels,), math.sqrt(2.0), device=conv.weight.device))
        self.eps = eps

    def aligned_weight(self) -> torch.Tensor:
        filters = self.weight.flatten(1)
        variance, mean = torch.var_mean(filters, dim=1, unbiased=False, keepdim=True)
        aligned = (filters - mean) * torch.rsqrt(filters.shape[1] * variance + self.eps)
        return (aligned * self.gain.unsqueeze(1)).view_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.aligned_weight(), self.bias)


class ChannelAffine(nn.Module):
    """Per-channel scale and shift: what is left of a BatchNorm2d without its sample statistics."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class WeightAlignConfig(MethodConfig):
    batch_norm: bool = Field(True, description="keep the BatchNorms (WA+BN); False drops their statistics")


@register_method
class WeightAlign(Method):
    """Swap every convolution for a weight-aligned one."""

    info = MethodInfo(
        name="weight_align",
        summary="Filters normalised by their own mean and sqrt(N)-scaled std (no sample statistics).",
        paper="Shi, Li, Liu, van Gemert, WeightAlign: Normalizing Activations by Weight Alignment, ICPR 2020",
        modifies_model=True,
        claim=Claim("WeightAlign normalisation trains as well as BatchNorm, independently of the batch size (qualitative)", kind="no_worse", margin=0.005),
    )
    Config = WeightAlignConfig
    search_space = {"batch_norm": Choice(choices=(True, False))}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        if replace_modules(model, lambda m: type(m) is nn.Conv2d, WeightAlignConv2d) == 0:
            raise ValueError(f"{type(model).__name__} has no convolution to align")
        if not self.config.batch_norm:
            replace_modules(model, lambda m: isinstance(m, nn.BatchNorm2d),
                            lambda norm: ChannelAffine(norm.num_features).to(norm.weight.device))
        return model
