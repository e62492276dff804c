"""Multi-sample dropout (Inoue, "Multi-Sample Dropout for Accelerated Training and Better
Generalization", arXiv 2019; catalogue T40).

After the feature extractor, S different dropout masks are applied to the same features; each
dropped copy goes through the shared output layer, and the training loss is the mean of the S
cross-entropies. At test time there is no dropout, so the model is deterministic.

As the paper notes, the S samples behave like an S-times larger batch for the layers after the
dropout: the prepared output layer stacks them along the batch dimension in training mode
([S*B, K] logits), and the loss repeats the labels S times, which averages the S losses exactly.
Assumption: the dropout sits right before the model's last linear layer (the classifier).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange, IntRange
from methods._layers import output_layer


class MultiSampleDropoutLinear(nn.Linear):
    """A linear classifier that, in training mode, returns `samples` dropout samples stacked on the batch."""

    def __init__(self, linear: nn.Linear, samples: int, rate: float) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        self.load_state_dict(linear.state_dict())
        self.samples, self.rate = samples, rate

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(features)
        copies = features.repeat(self.samples, *([1] * (features.ndim - 1)))
        return super().forward(F.dropout(copies, self.rate, training=True))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, samples={self.samples}, rate={self.rate}"


class MultiSampleDropoutConfig(MethodConfig):
    samples: int = Field(8, ge=1, le=64, description="S: dropout samples per image")
    rate: float = Field(0.5, ge=0.0, lt=1.0, description="dropout probability of each sample")


@register_method
class MultiSampleDropout(Method):
    """Average the cross-entropy over several dropout samples of the classifier's input."""

    info = MethodInfo(
        name="multi_sample_dropout",
        summary="S dropout masks before a shared classifier; the loss is the mean of the S losses.",
        paper="Inoue, Multi-Sample Dropout for Accelerated Training and Better Generalization, arXiv 2019",
        modifies_model=True,
        cost_factor=1.05,  # the S extra passes cover only the output layer,
        claim=Claim("multi-sample dropout trains faster and reaches a lower error (no numbers)"),
    )
    Config = MultiSampleDropoutConfig
    search_space = {"samples": IntRange(low=2, high=8), "rate": FloatRange(low=0.1, high=0.6)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        parent, name, linear = output_layer(model)
        setattr(parent, name, MultiSampleDropoutLinear(linear, self.config.samples, self.config.rate))
        return model

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        logits = model(images)
        samples = logits.shape[0] // labels.shape[0]  # 1 on a model this method did not prepare
        loss = F.cross_entropy(logits.float(), labels.repeat(samples))
        return LossOutput(loss, logits=logits if samples == 1 else None)
