"""Plackett-Luce distillation, PLD (Bassam, Zhu and Bian, "PLD: A Choice-Theoretic List-Wise Knowledge
Distillation", arXiv:2506.12542, 2025; catalogue T10).

The student's logits s define a Plackett-Luce distribution over rankings of the classes. PLD maximises
the likelihood of one "teacher-optimal" ranking pi*: the true label first, then the other classes in
descending teacher logit, each choice weighted by the teacher's confidence in it:

    L = sum_k alpha_k [ log sum_{l >= k} exp(s_{pi*_l}) - s_{pi*_k} ],   alpha_k = softmax(t / tau)_{pi*_k}

It replaces cross-entropy plus KD (alpha = (1, 0, ..., 0) is exactly cross-entropy), so there is no
mixing weight; tau is the only knob (the paper finds tau = 1 best on ImageNet). The formula is checked
against the paper (sections 4.1-4.2 and appendix A): the temperature softens only the teacher's weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.preconditions import TeacherMargin
from harness.search_space import FloatRange
from methods._common import teacher_logits


class PLDConfig(MethodConfig):
    temperature: float = Field(1.0, gt=0.0, description="tau: softens the teacher's confidence weights")


def teacher_optimal_order(teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B,K] class indices: the label first, then the rest by descending teacher logit (ties by class index)."""
    scores = teacher.clone().scatter_(1, labels.unsqueeze(1), float("inf"))
    return scores.argsort(dim=1, descending=True, stable=True)


def plackett_luce_loss(student: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted negative Plackett-Luce log-likelihood of `order` under `student` logits, mean over the batch.

    `weights` [B,K] are per rank position: weights[:, k] scales the k-th choice.
    """
    ranked = student.gather(1, order)
    tail_logsumexp = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)  # log sum_{l >= k} exp(s_{pi_l})
    return (weights * (tail_logsumexp - ranked)).sum(dim=1).mean()


@register_method
class PlackettLuceDistillation(Method):
    """One list-wise ranking loss instead of cross-entropy plus a distillation term."""

    info = MethodInfo(
        name="pld",
        summary="Plackett-Luce distillation: teacher-weighted likelihood of the label-first teacher ranking.",
        paper="Bassam, Zhu, Bian, PLD: A Choice-Theoretic List-Wise Knowledge Distillation, arXiv 2025",
        needs=("teacher",),
        cost_factor=1.3,  # one no-grad teacher forward per step; the sort is O(K log K) per example,
        claim=Claim("progressive label distillation gives consistent gains over the student trained alone",
                    preconditions=(TeacherMargin(points=0.03),)),  # a teacher clearly above the student
    )
    Config = PLDConfig
    search_space = {"temperature": FloatRange(low=0.5, high=4.0, log=True)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        teacher = teacher_logits(ctx, images, "pld")
        logits = model(images)
        order = teacher_optimal_order(teacher, labels)
        weights = F.softmax(teacher / self.config.temperature, dim=1).gather(1, order)
        loss = plackett_luce_loss(logits.float(), order, weights)
        return LossOutput(loss, parts={"teacher_target_weight": weights[:, 0].mean()}, logits=logits)
