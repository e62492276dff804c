"""A toy training method from outside the harness, to show that a new method is one class in one file.

`toy_pseudo_labels`: cross-entropy on the labels plus `weight` x cross-entropy on the teacher's hard
predictions (its pseudo-labels), the weight ramped up linearly over the first `rampup` of training. The
teacher labels each image as it was before augmentation (`ctx.unaugmented_images`), so its pseudo-label
does not depend on the crop the student sees. It declares that it needs a teacher (`MethodInfo.needs`):
a suite whose benchmark has none is rejected at `benchmarks[i].teacher`.

Loaded through $HARNESS_PLUGINS (`HARNESS_PLUGINS=tests.toy_method`), never shipped in `methods/`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import (
    LossOutput,
    Method,
    MethodConfig,
    MethodInfo,
    TrainContext,
    labelled_cross_entropy,
    register_method,
)
from harness.search_space import FloatRange


class ToyPseudoLabelsConfig(MethodConfig):
    weight: float = Field(0.5, ge=0.0, description="weight of the cross-entropy on the teacher's pseudo-labels")
    rampup: float = Field(0.25, ge=0.0, le=1.0, description="fraction of training over which the weight ramps up")


@register_method
class ToyPseudoLabels(Method):
    """Learn from the labels and from the teacher's argmax on the clean image."""

    info = MethodInfo(name="toy_pseudo_labels", summary="Cross-entropy plus a ramped-up cross-entropy on the "
                      "teacher's pseudo-labels (a toy plugin).", needs=("teacher",))
    Config = ToyPseudoLabelsConfig
    search_space = {"weight": FloatRange(low=0.0, high=1.0)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        if ctx.teacher is None or ctx.input_shape is None:
            raise RuntimeError("toy_pseudo_labels runs with the harness's teacher and knows the input shape")
        with torch.no_grad():  # the teacher must label the benchmark's images
            probe = torch.zeros((1, *ctx.input_shape), device=next(ctx.teacher.parameters()).device)
            if ctx.teacher(probe).shape[1] < ctx.num_classes:
                raise ValueError(f"the teacher ({ctx.teacher_model}) predicts fewer than {ctx.num_classes} classes")
        return model

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        assert ctx.teacher is not None  # declared in `needs`: the suite check guarantees it
        logits = model(images)
        with torch.no_grad():
            pseudo = ctx.teacher(ctx.unaugmented_images(images))[:, : ctx.num_classes].argmax(1)
        supervised = labelled_cross_entropy(logits, labels)
        from_teacher = F.cross_entropy(logits.float(), pseudo)
        ramp = min(1.0, ctx.progress / self.config.rampup) if self.config.rampup > 0 else 1.0
        loss = supervised + self.config.weight * ramp * from_teacher
        return LossOutput(loss, parts={"ce": supervised.detach(), "pseudo_ce": from_teacher.detach()},
                          logits=logits)
