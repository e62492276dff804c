"""Attentional activation units (Dai, Oehmcke, Gieseke, Wu and Barnard, "Attention as Activation",
ICPR 2020; catalogue T92).

Every ReLU is replaced by an ATAC unit, a local channel attention that is itself the nonlinearity:

    y = x * sigmoid(BN(PW2(ReLU(BN(PW1(x))))))

where PW1 (C -> C/r) and PW2 (C/r -> C) are point-wise (1x1) convolutions, so the gate of each
pixel aggregates that pixel's cross-channel context only (no global pooling, unlike SE blocks).
Checked against the `ChaATAC` MXNet block published with the paper (useGlobal=False, useReLU=True).
Assumption: all ReLUs are replaced, both of each residual block included, with one reduction r.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from harness.method import Claim, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import Choice
from methods._layers import swap_activations


class ATACUnit(nn.Module):
    """x * sigmoid(local channel attention(x)); deterministic in eval mode (BN running statistics)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.attention = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class ATACConfig(MethodConfig):
    reduction: int = Field(4, ge=1, le=64, description="r: channel reduction of the attention bottleneck")


@register_method
class AttentionAsActivation(Method):
    """Swap every ReLU for an ATAC unit."""

    info = MethodInfo(
        name="atac",
        summary="Replace every ReLU by an attentional activation (point-wise channel attention gate).",
        paper="Dai, Oehmcke, Gieseke, Wu, Barnard, Attention as Activation, ICPR 2020",
        modifies_model=True,  # the added 1x1 convolutions are counted in the model's forward FLOPs,
        claim=Claim("attentional activation units give accuracy gains at a comparable number of parameters"),
    )
    Config = ATACConfig
    search_space = {"reduction": Choice(choices=(2, 4, 8))}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        reduction = self.config.reduction
        swap_activations(model, lambda channels: ATACUnit(channels, reduction))
        return model
