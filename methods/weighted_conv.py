"""Weighted convolution (Cammarasana and Patanè, "Optimal Weighted Convolution for Classification and
Denoising", arXiv 2025; catalogue T94).

Each convolution kernel is multiplied element-wise by a fixed spatial density that weights a
neighbour by its position relative to the centre pixel, W' = W * (phi phi^T), with the same trainable
parameters as the plain convolution. For a 3x3 kernel phi = [d, 1, d], so the centre tap keeps
weight 1, edge taps d and corner taps d^2; d = 1 is the ordinary convolution.

Checked against the authors' released `wConv2d` (weightedConvolution2.0), whose README suggests
tuning d in [0.5, 1.5] for 3x3 kernels. Assumptions: one density value shared by all layers (their
non-trainable variant); 1x1 convolutions are unchanged (phi = [1]); larger odd kernels, which the
harness's models do not have, use the profile d^|offset| instead of separately tuned values.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from harness.method import Claim, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange
from methods._layers import replace_modules


def density_profile(kernel_size: int, density: float) -> torch.Tensor:
    """phi phi^T for phi = [d^k, ..., d, 1, d, ..., d^k], a (kernel_size x kernel_size) matrix."""
    offsets = (torch.arange(kernel_size) - kernel_size // 2).abs().double()
    phi = torch.full((kernel_size,), float(density), dtype=torch.float64).pow(offsets)
    return torch.outer(phi, phi).float()


class WeightedConv2d(nn.Conv2d):
    """A Conv2d whose kernel is scaled by a fixed spatial density buffer (same `weight` and `bias`)."""

    def __init__(self, conv: nn.Conv2d, density: float) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        self.load_state_dict(conv.state_dict())
        self.register_buffer("density", density_profile(conv.kernel_size[0], density).to(conv.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.density.to(self.weight.dtype), self.bias)


def _weightable(module: nn.Module) -> bool:
    if type(module) is not nn.Conv2d:
        return False
    height, width = module.kernel_size
    return height == width and height % 2 == 1 and height > 1


class WeightedConvConfig(MethodConfig):
    density: float = Field(0.7, gt=0.0, le=2.0, description="d: weight of the edge taps of a 3x3 kernel")


@register_method
class WeightedConvolution(Method):
    """Swap every square, odd, non-1x1 convolution for a weighted convolution."""

    info = MethodInfo(
        name="weighted_conv",
        summary="Kernels scaled by a fixed spatial density phi phi^T, phi = [d, 1, d] (same parameters).",
        paper="Cammarasana, Patanè, Optimal Weighted Convolution for Classification and Denoising, arXiv 2025",
        modifies_model=True,
        claim=Claim("weighted convolutions beat standard ones (VGG on CIFAR-100: 66.94% vs 56.89%)"),
    )
    Config = WeightedConvConfig
    search_space = {"density": FloatRange(low=0.5, high=1.5)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        density = self.config.density
        if replace_modules(model, _weightable, lambda conv: WeightedConv2d(conv, density)) == 0:
            raise ValueError(f"{type(model).__name__} has no square odd convolution to weight")
        return model
