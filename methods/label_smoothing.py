"""Label smoothing (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016, section 7).

The one-hot target is replaced by a mixture with the uniform distribution over the K classes,
q' = (1 - eps) * onehot(y) + eps / K, which penalises over-confident logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange


class LabelSmoothingConfig(MethodConfig):
    smoothing: float = Field(0.1, ge=0.0, lt=1.0, description="eps: mass moved from the label to uniform")


@register_method
class LabelSmoothing(Method):
    """Cross-entropy against smoothed targets."""

    info = MethodInfo(
        name="label_smoothing",
        summary="Cross-entropy against targets mixed with the uniform distribution.",
        paper="Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016",
        claim=Claim("smoothing the one-hot targets improves top-1 accuracy (Inception-v3, ImageNet: -0.2% top-1 error)"),
    )
    Config = LabelSmoothingConfig
    search_space = {"smoothing": FloatRange(low=0.0, high=0.3)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.smoothing)
        return LossOutput(loss, logits=logits)
