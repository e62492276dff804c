"""Knowledge distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015).

The student matches the teacher's temperature-softened distribution while fitting the labels:

    L = (1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

The T^2 factor keeps the soft term's gradient scale independent of T (section 2 of the paper).
The teacher is the larger model the benchmark declares; the harness trains it once per seed on
the same split the student sees, caches it, and passes it in `ctx.teacher` (frozen, eval mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.preconditions import TeacherMargin
from harness.search_space import FloatRange


class KDConfig(MethodConfig):
    temperature: float = Field(4.0, gt=0.0, description="T: softens both distributions")
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the distillation term")


@register_method
class KnowledgeDistillation(Method):
    """Soft targets from a teacher, mixed with the hard-label cross-entropy."""

    info = MethodInfo(
        name="kd",
        summary="Hinton distillation from the benchmark's teacher (soft targets at temperature T).",
        paper="Hinton, Vinyals, Dean, Distilling the Knowledge in a Neural Network, NeurIPS DL Workshop 2015",
        needs=("teacher",),
        cost_factor=1.3,
        claim=Claim("a student distilled from a larger teacher beats the same student trained on the labels alone",
                    preconditions=(TeacherMargin(points=0.03),)),  # a teacher clearly above the student
    )
    Config = KDConfig
    search_space = {"temperature": FloatRange(low=1.0, high=8.0, log=True), "alpha": FloatRange(low=0.1, high=0.95)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        if ctx.teacher is None:
            raise RuntimeError("kd needs ctx.teacher; the benchmark must declare a teacher")
        with torch.no_grad():
            teacher_logits = ctx.teacher(images).float()
        logits = model(images)
        student = logits.float()
        t = self.config.temperature
        hard = F.cross_entropy(student, labels)
        soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                        reduction="batchmean", log_target=True) * (t * t)
        loss = (1.0 - self.config.alpha) * hard + self.config.alpha * soft
        return LossOutput(loss, parts={"hard": hard.detach(), "soft": soft.detach()}, logits=logits)
