"""Adversarial fine-tuning with a slow-start, fast-decay learning rate (Jeddi, Shafiee and Wong, "A Simple
Fine-tuning Is All You Need: Towards Robust Deep Learning Via Adversarial Fine-tuning", 2020; catalogue T29).

Instead of PGD adversarial training from scratch, start from a network trained on clean data and train it
a short while on PGD-L-inf examples (Madry's inner maximisation, as `pgd_at`). The paper attributes robust
overfitting partly to the learning-rate schedule and fine-tunes with a "slow start, fast decay" one.

Assumptions. The pre-trained network is the benchmark's teacher, which the harness trains on the same
split; the benchmark must declare `teacher.model` equal to `model`, and its training is the teacher's row,
not this method's cost. The schedule's shape is our reading of the paper's figure: the multiplier rises
linearly from 0 to 1 over the first `slow_start_fraction` of the steps (default 0.7), then falls linearly
to 0 over the rest, so the decay is (1 - f) / f times shorter than the start:

    m(s) = (s + 1) / W            for s < W = round(f * S)
    m(s) = (S - s) / (S - W)      for s >= W
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.evaluation.attacks import default_pgd_step_size, pgd_linf
from harness.method import (
    Claim,
    LossOutput,
    LRSchedule,
    Method,
    MethodConfig,
    MethodInfo,
    TrainContext,
    register_method,
)
from harness.search_space import FloatRange
from methods._common import copy_teacher_weights


class AdvFinetuneConfig(MethodConfig):
    epsilon: float = Field(0.1, gt=0.0, le=1.0, description="L-inf radius in [0,1] pixel units")
    steps: int = Field(3, ge=1, description="k: PGD iterations of the inner maximisation")
    step_size: float | None = Field(None, gt=0.0, description="alpha; default 2.5 * eps / k")
    slow_start_fraction: float = Field(0.7, gt=0.0, lt=1.0,
                                       description="share of the steps over which the lr rises linearly from 0")


def slow_start_fast_decay(total_steps: int, slow_start_fraction: float) -> LRSchedule:
    """LR multiplier: linear rise to 1 over the first fraction of the steps, then linear fall to 0 at the end."""
    rise = min(max(1, round(total_steps * slow_start_fraction)), max(1, total_steps - 1))

    def factor(step: int) -> float:
        if step < rise:
            return (step + 1) / rise
        return max(0.0, (total_steps - step) / max(1, total_steps - rise))

    return factor


@register_method
class AdversarialFinetuning(Method):
    """Copy the pre-trained teacher into the model, then PGD adversarial training under the paper's schedule."""

    info = MethodInfo(
        name="adv_finetune",
        summary="PGD adversarial fine-tuning of the pre-trained teacher (same architecture), slow-start fast-decay lr.",
        paper="Jeddi, Shafiee, Wong, A Simple Fine-tuning Is All You Need: Towards Robust Deep Learning Via "
              "Adversarial Fine-tuning, arXiv:2012.13628, 2020",
        needs=("teacher",),
        cost_factor=4.0,  # at the default 3 steps: 3 attack passes + 1 training pass, as pgd_at
        claim=Claim("adversarial fine-tuning with a slow-start, fast-decay lr gives better accuracy and "
                    "robustness than PGD-AT from scratch at 8-10x less compute", metric="test/pgd_linf_accuracy",
                    baseline="pgd_at"),
    )
    Config = AdvFinetuneConfig
    search_space = {"slow_start_fraction": FloatRange(low=0.3, high=0.9)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        return copy_teacher_weights(model, ctx, "adv_finetune")

    def lr_schedule(self, default: LRSchedule, ctx: TrainContext) -> LRSchedule:
        return slow_start_fast_decay(ctx.total_steps, self.config.slow_start_fraction)

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        if ctx.teacher is None:  # the engine passes the teacher whenever it gave one to prepare_model
            raise RuntimeError("adv_finetune fine-tunes the benchmark's teacher; the benchmark must declare one")
        cfg = self.config
        step_size = cfg.step_size or default_pgd_step_size(cfg.epsilon, cfg.steps)
        adversarial = pgd_linf(model, images, labels, epsilon=cfg.epsilon, steps=cfg.steps,
                               step_size=step_size, random_start=True, generator=None)
        robust = F.cross_entropy(model(adversarial).float(), labels)
        return LossOutput(robust, parts={"robust": robust.detach()})
