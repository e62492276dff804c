"""Norm loss (Georgiou, Schmitt, Bäck, Chen and Lew, "Norm Loss: An efficient yet effective
regularization method for deep neural networks", ICPR 2020; catalogue T37).

A soft constraint steers every weight matrix toward the Oblique manifold (all weight vectors of unit
norm): for each conv / linear layer with output units w_1..w_n (a filter, flattened, or a row),

    L = CE + lambda * sum_layers (1/n) * sum_i (1 - ||w_i||_2^2)^2

Assumptions (the catalogue's formula is marked BG and the paper's text was not available to check):
the penalty is on the squared norms, i.e. on diag(W W^T) - 1, which is how the Oblique manifold is
defined; it is averaged over the units of a layer so that lambda does not scale with width; and it
covers every conv and linear weight, the classifier included. The engine's weight decay still
applies; the tuner can drive it down if the two regularisers conflict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange


def norm_penalty(model: nn.Module) -> torch.Tensor:
    """sum over conv/linear layers of the mean over output units of (1 - ||w_i||^2)^2."""
    terms = [(1.0 - module.weight.float().flatten(1).pow(2).sum(1)).pow(2).mean()
             for module in model.modules() if isinstance(module, nn.Conv2d | nn.Linear)]
    if not terms:
        raise ValueError(f"{type(model).__name__} has no conv or linear weights to regularise")
    return torch.stack(terms).sum()


class NormLossConfig(MethodConfig):
    weight: float = Field(0.01, ge=0.0, description="lambda: weight of the norm penalty")


@register_method
class NormLoss(Method):
    """Cross-entropy plus a penalty pulling each weight vector toward unit norm."""

    info = MethodInfo(
        name="norm_loss",
        summary="Cross-entropy + lambda * mean (1 - ||w_i||^2)^2 per layer: weights toward the Oblique manifold.",
        paper="Georgiou, Schmitt, Bäck, Chen, Lew, Norm Loss: An efficient yet effective regularization "
              "method for deep neural networks, ICPR 2020",
        claim=Claim("the norm loss is competitive with or better than the state of the art, at negligible overhead"),
    )
    Config = NormLossConfig
    search_space = {"weight": FloatRange(low=1e-4, high=1e-1, log=True)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        logits = model(images)
        task = F.cross_entropy(logits.float(), labels)
        penalty = norm_penalty(model)
        loss = task + self.config.weight * penalty
        return LossOutput(loss, parts={"task": task.detach(), "norm": penalty.detach()}, logits=logits)
