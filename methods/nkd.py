"""Normalized knowledge distillation, NKD (Yang, Zeng, Li, Zhang, Yuan and Li, "From Knowledge Distillation
to Self-Knowledge Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels",
ICCV 2023; catalogue T11).

The KD loss splits into a target-class term and a non-target term. The non-target probabilities of
teacher and student sum to different amounts (1 - T_t and 1 - S_t), so they cannot match; NKD
renormalises both over the K-1 non-target classes before matching them:

    L = CE(z_s, y) - T_t log S_t - gamma * lambda^2 * sum_{i != y} N(T^lambda)_i log N(S^lambda)_i

with T_t, S_t the teacher's and student's softmax probability of the label, and N(.^lambda) the softmax
over the non-target logits at temperature lambda. Checked against the authors' code (yzd-v/cls_KD,
`NKDLoss`, added to the student's cross-entropy by its distiller): the target term uses temperature 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.preconditions import TeacherMargin
from harness.search_space import FloatRange
from methods._common import drop_target_column, non_target_log_softmax, teacher_logits


class NKDConfig(MethodConfig):
    temperature: float = Field(1.0, gt=0.0, description="lambda: temperature of the non-target distributions")
    gamma: float = Field(1.5, ge=0.0, description="weight of the normalised non-target term")


def nkd_terms(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(target term -T_t log S_t, non-target cross-entropy of the normalised distributions), batch means."""
    student_log_probs = F.log_softmax(student, dim=1)
    teacher_target = F.softmax(teacher, dim=1).gather(1, labels.unsqueeze(1))
    target = -(teacher_target * student_log_probs.gather(1, labels.unsqueeze(1))).mean()
    teacher_non_target = F.softmax(drop_target_column(teacher, labels) / temperature, dim=1)
    non_target = -(teacher_non_target * non_target_log_softmax(student, labels, temperature)).sum(1).mean()
    return target, non_target


@register_method
class NormalizedKD(Method):
    """Cross-entropy plus the teacher's target probability and its renormalised non-target distribution."""

    info = MethodInfo(
        name="nkd",
        summary="Normalized KD: match the teacher's target probability and renormalised non-target distribution.",
        paper="Yang et al., From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with "
              "Normalized Loss and Customized Soft Labels, ICCV 2023",
        needs=("teacher",),
        cost_factor=1.3,  # one no-grad teacher forward per step,
        claim=Claim("normalized KD beats plain training (ResNet-18 from ResNet-34 on ImageNet: 69.90% -> 71.96% top-1)",
                    preconditions=(TeacherMargin(points=0.03),)),  # the paper's teacher is 3.4 points above
    )
    Config = NKDConfig
    search_space = {"temperature": FloatRange(low=1.0, high=4.0, log=True), "gamma": FloatRange(low=0.5, high=4.0)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        teacher = teacher_logits(ctx, images, "nkd")
        logits = model(images)
        student = logits.float()
        cfg = self.config
        hard = F.cross_entropy(student, labels)
        target, non_target = nkd_terms(student, teacher, labels, cfg.temperature)
        loss = hard + target + cfg.gamma * cfg.temperature**2 * non_target
        parts = {"hard": hard.detach(), "target": target.detach(), "non_target": non_target.detach()}
        return LossOutput(loss, parts=parts, logits=logits)
