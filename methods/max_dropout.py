"""MaxDropout (do Santos, Colombo, Roder and Papa, "MaxDropout: Deep Neural Network Regularization
Based on Maximum Output Values", ICPR 2020; catalogue T38).

Instead of random units, training shuts off the most active ones: the activation tensor is min-max
normalised to [0, 1] and every unit whose normalised value exceeds 1 - rate is set to zero; kept
units are not rescaled, and at test time the layer is the identity (deterministic, no randomness).

Checked against the MaxDropout layer of the authors' PyTorch code, which normalises over the whole
batch tensor, so "rate" is the top fraction of the activation *range* that is dropped, not a fraction
of the units. Assumption: a MaxDropout layer follows every hidden activation (the catalogue's
"each hidden layer"), including both ReLUs of each residual block.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from harness.method import Claim, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange
from methods._layers import swap_activations


class MaxDropout(nn.Module):
    """Zero the units whose min-max normalised value is above 1 - rate (training mode only)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        low, high = x.detach().amin(), x.detach().amax()
        normalised = (x.detach() - low) / (high - low).clamp_min(torch.finfo(x.dtype).tiny)
        return x.masked_fill(normalised > 1.0 - self.rate, 0.0)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class MaxDropoutConfig(MethodConfig):
    rate: float = Field(0.3, ge=0.0, le=1.0, description="top fraction of the activation range set to zero")


@register_method
class MaxDropoutMethod(Method):
    """Insert MaxDropout after every hidden ReLU."""

    info = MethodInfo(
        name="max_dropout",
        summary="Drop the most active units (top `rate` of the normalised range) after every hidden ReLU.",
        paper="do Santos, Colombo, Roder, Papa, MaxDropout: Deep Neural Network Regularization Based on "
              "Maximum Output Values, ICPR 2020",
        modifies_model=True,
        claim=Claim("MaxDropout improves a network when it replaces Dropout"),
    )
    Config = MaxDropoutConfig
    search_space = {"rate": FloatRange(low=0.05, high=0.5)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        rate = self.config.rate
        swap_activations(model, lambda channels: nn.Sequential(nn.ReLU(inplace=True), MaxDropout(rate)))
        return model
