"""Mean Teacher with Local Clustering (Chen, Dutton, Ramachandra, Wu and Vatsavai, "Local Clustering with
Mean Teacher for Semi-supervised Learning", ICPR 2020; catalogue T59), for a few-labels scenario.

Mean Teacher (Tarvainen and Valpola, NeurIPS 2017): the teacher's weights are an exponential moving
average of the student's; the student is trained with cross-entropy on the labelled images and a
consistency loss (MSE between the softmax outputs) to the teacher's predictions on every image, each
model seeing its own random perturbation of the input. Local Clustering adds a loss that pulls the
penultimate features of neighbouring images together, for labelled-unlabelled and unlabelled-unlabelled
pairs: with d_ij the mean squared feature difference and tau a distance threshold,

    LC = sum_ij [d_ij <= tau] d_ij exp(-d_ij / tau) / sum_ij [d_ij <= tau]     (per pair set, then summed)

Checked against the authors' code (jay1204/local_clustering_with_mt_for_ssl): the LC formula, softmax-MSE
consistency, the sigmoid ramp-ups exp(-5 (1 - t)^2), and LC switched on late (epoch 600 of 1000 on
CIFAR-10, 300 of 600 on SVHN) with its own ramp-up; their code keeps the checkpoint with the best EMA
teacher accuracy, so `finalize` returns the teacher (the student is what trains). Assumptions: one mixed batch replaces their separate labelled and unlabelled loaders
(labels == UNLABELLED marks the unlabelled); training progress replaces epochs; the perturbation is
Gaussian pixel noise (the benchmark's augmentation, if any, comes on top); the EMA decay warms up as in
the Mean Teacher code, min(1 - 1/(t + 1), decay); the teacher runs in train mode, so its BatchNorm
statistics come from its own forward passes. tau depends on the feature scale (theirs: 40-50 for their
network): the default 0.2 is about the median pairwise distance of fast_cnn's features on Fashion-MNIST
after a few dozen steps, and the search range is wide.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.data import ImageArrays
from harness.data.sources import UNLABELLED
from harness.method import (
    Claim,
    LossOutput,
    Method,
    MethodConfig,
    MethodInfo,
    TrainContext,
    labelled_cross_entropy,
    register_method,
)
from harness.search_space import Choice, FloatRange
from methods._layers import forward_with_features


class MeanTeacherConfig(MethodConfig):
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0, description="EMA decay of the teacher's weights")
    consistency_weight: float = Field(100.0, ge=0.0, description="weight of the softmax-MSE consistency loss")
    consistency_rampup: float = Field(0.3, ge=0.0, le=1.0, description="fraction of training to ramp consistency up")
    input_noise: float = Field(0.1, ge=0.0, description="std of the Gaussian pixel noise of each model's input")
    lc_weight: float = Field(10.0, ge=0.0, description="weight of the local clustering loss (0: plain Mean Teacher)")
    lc_threshold: float = Field(0.2, gt=0.0, description="tau: neighbours have mean squared feature distance <= tau")
    lc_start: float = Field(0.5, ge=0.0, le=1.0, description="fraction of training before local clustering starts")
    lc_rampup: float = Field(0.1, ge=0.0, le=1.0, description="fraction of training to ramp local clustering up")


def sigmoid_rampup(elapsed: float, length: float) -> float:
    """exp(-5 (1 - t)^2) for t = elapsed / length in [0, 1]; 0 before the start, 1 after the ramp."""
    if elapsed < 0:
        return 0.0
    if length <= 0 or elapsed >= length:
        return 1.0
    return math.exp(-5.0 * (1.0 - elapsed / length) ** 2)


def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student, parameter by parameter (buffers untouched)."""
    with torch.no_grad():
        for mean, current in zip(teacher.parameters(), student.parameters(), strict=True):
            mean.mul_(decay).add_(current.detach(), alpha=1.0 - decay)


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over batch and classes of (softmax(student) - softmax(teacher))^2."""
    return F.mse_loss(student_logits.float().softmax(1), teacher_logits.float().softmax(1))


def pairwise_clustering(first: torch.Tensor, second: torch.Tensor, threshold: float) -> torch.Tensor:
    """sum [d <= tau] d exp(-d / tau) / sum [d <= tau] over all pairs, d the mean squared difference."""
    first, second = first.float(), second.float()
    squared = (first.pow(2).sum(1, keepdim=True) + second.pow(2).sum(1) - 2.0 * first @ second.T).clamp(min=0.0)
    distance = squared / first.shape[1]
    near = (distance <= threshold).to(distance.dtype)
    return (distance * near * torch.exp(-distance / threshold)).sum() / near.sum().clamp(min=1.0)


def local_clustering_loss(labelled: torch.Tensor, unlabelled: torch.Tensor, threshold: float) -> torch.Tensor:
    """LC over labelled-unlabelled plus unlabelled-unlabelled pairs (each pair set averaged on its own)."""
    if unlabelled.shape[0] == 0:
        return unlabelled.sum() + labelled.sum() * 0.0
    loss = pairwise_clustering(unlabelled, unlabelled, threshold)
    if labelled.shape[0] > 0:
        loss = loss + pairwise_clustering(labelled, unlabelled, threshold)
    return loss


@register_method
class MeanTeacher(Method):
    """An EMA teacher's predictions as consistency targets, plus local clustering of the features."""

    info = MethodInfo(
        name="mean_teacher",
        summary="Mean Teacher (EMA teacher, softmax consistency) plus Local Clustering of neighbouring features.",
        paper="Chen, Dutton, Ramachandra, Wu, Vatsavai, Local Clustering with Mean Teacher for Semi-supervised "
              "Learning, ICPR 2020",
        needs=("unlabelled",),
        cost_factor=2.0,  # a teacher forward per step, the pairwise feature distances, the EMA (~2x on CPU)
        claim=Claim("mean teacher with local clustering beats training on the labelled few (significant gains over MT, no numbers)"),
    )
    Config = MeanTeacherConfig
    search_space = {"ema_decay": Choice(choices=(0.9, 0.95, 0.99)),
                    "consistency_weight": FloatRange(low=1.0, high=100.0, log=True),
                    "lc_weight": FloatRange(low=0.1, high=30.0, log=True),
                    "lc_threshold": FloatRange(low=0.01, high=5.0, log=True)}

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.teacher: nn.Module | None = None

    def _start_teacher(self, student: nn.Module) -> nn.Module:
        self.teacher = copy.deepcopy(student).train().requires_grad_(False)
        return self.teacher

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        self._start_teacher(model)  # exists before a checkpoint restores it
        return model

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        cfg = self.config
        student = ctx.plain_model(model)  # the teacher starts as the student as training begins
        teacher = self._start_teacher(student) if self.teacher is None or ctx.step == 0 else self.teacher
        teacher.to(images.device).train()
        features, logits = forward_with_features(model, images + cfg.input_noise * torch.randn_like(images))
        with torch.no_grad():
            target = teacher(images + cfg.input_noise * torch.randn_like(images))
        supervised = labelled_cross_entropy(logits, labels)
        consistency = softmax_mse(logits, target)
        unlabelled = labels == UNLABELLED
        clustering = local_clustering_loss(features[~unlabelled], features[unlabelled], cfg.lc_threshold)
        consistency_ramp = sigmoid_rampup(ctx.progress, cfg.consistency_rampup)
        clustering_ramp = sigmoid_rampup(ctx.progress - cfg.lc_start, cfg.lc_rampup)
        loss = (supervised + cfg.consistency_weight * consistency_ramp * consistency
                + cfg.lc_weight * clustering_ramp * clustering)
        return LossOutput(loss, parts={"ce": supervised.detach(), "consistency": consistency.detach(),
                                       "local_clustering": clustering.detach()})

    def ema_decay_at(self, step: int) -> float:
        """The Mean Teacher code's warm-up: a plain average of the weights so far until it exceeds `ema_decay`."""
        return min(1.0 - 1.0 / (step + 2), self.config.ema_decay)

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, model, self.ema_decay_at(ctx.step))

    def finalize(self, model: nn.Module, data: ImageArrays, ctx: TrainContext) -> nn.Module:
        """The EMA teacher, which the paper reports (the student is discarded)."""
        if self.teacher is None:
            return model
        device = next(model.parameters()).device
        return copy.deepcopy(self.teacher).to(device).requires_grad_(True).eval()

    def state_dict(self) -> dict[str, Any]:
        if self.teacher is None:
            return {}
        return {"teacher": {k: v.detach().to("cpu", copy=True) for k, v in self.teacher.state_dict().items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "teacher" not in state:
            return
        if self.teacher is None:
            raise RuntimeError("mean_teacher: load_state_dict needs the teacher built by prepare_model first")
        self.teacher.load_state_dict(state["teacher"])
