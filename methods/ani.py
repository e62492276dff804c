"""Adaptive noise injection, ANI (Tan, Elovici and Binder, "Adaptive Noise Injection for Training Stochastic
Student Networks from Deterministic Teachers", 2020; catalogue T17).

A stochastic network is built from a deterministic one: initialise from the trained teacher's weights
(same architecture) and inject Gaussian noise into the activations, in training and at test time, with a
magnitude that follows the statistics of the current mini-batch, so the randomness keeps pace with the
scale of every layer as it trains. Predictions are random at test time: the harness attacks it with EOT.

Assumptions (the abstract names the ingredients, not the formula). After every BatchNorm2d we add

    y = BN(x) + alpha * sigma_c * eps,   eps ~ N(0, I),   sigma_c = std of BN(x)[:, c] over batch and pixels

with sigma_c computed on the batch at hand and detached (a statistic, not a path for gradients), and alpha
a fixed hyper-parameter shared by all layers: with plain cross-entropy a learnable alpha would be driven
to 0, which is why parametric noise injection (He et al. 2019) needs adversarial training to keep it. We
fine-tune with cross-entropy only, no adversarial examples: the paper's point is a cheap path from a
deterministic teacher to a robust stochastic student. The benchmark must declare `teacher.model` = `model`.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

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
from harness.search_space import FloatRange
from methods._common import copy_teacher_weights
from methods._layers import replace_modules


def adaptive_noise(features: torch.Tensor, scale: float) -> torch.Tensor:
    """Gaussian noise with std `scale` x the per-channel std of `features` over every dim but dim 1."""
    dims = [d for d in range(features.ndim) if d != 1]
    sigma = features.detach().float().std(dim=dims, keepdim=True, unbiased=False).to(features.dtype)
    return scale * sigma * torch.randn_like(features)


class NoisyBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d followed by adaptive Gaussian noise, in training and evaluation alike."""

    def __init__(self, norm: nn.BatchNorm2d, noise_scale: float) -> None:
        super().__init__(norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                         track_running_stats=norm.track_running_stats,
                         device=norm.running_mean.device if norm.running_mean is not None else None)
        self.load_state_dict(norm.state_dict())
        self.noise_scale = noise_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalised = super().forward(x)
        return normalised + adaptive_noise(normalised, self.noise_scale) if self.noise_scale > 0 else normalised

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, noise_scale={self.noise_scale}"


class ANIConfig(MethodConfig):
    noise_scale: float = Field(0.2, ge=0.0, description="alpha: noise std relative to the batch's per-channel std")


@register_method
class AdaptiveNoiseInjection(Method):
    """Teacher initialisation, then cross-entropy training with batch-adaptive noise after every BatchNorm."""

    info = MethodInfo(
        name="ani",
        summary="Stochastic student from the teacher's weights with batch-adaptive Gaussian activation noise.",
        paper="Tan, Elovici, Binder, Adaptive Noise Injection for Training Stochastic Student Networks from "
              "Deterministic Teachers, 2020",
        needs=("teacher",),
        modifies_model=True,
        stochastic=True,
        cost_factor=1.1,  # one std and one Gaussian draw per BatchNorm output
        claim=Claim("a teacher-initialised stochastic student with adaptive noise beats prior stochastic "
                    "defences under white-box attacks (qualitative); here: PGD accuracy (EOT) above the tuned "
                    "erm, as no other stochastic defence is in the suite", metric="test/pgd_linf_accuracy"),
    )
    Config = ANIConfig
    search_space = {"noise_scale": FloatRange(low=0.05, high=0.5, log=True)}

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        model = copy_teacher_weights(model, ctx, "ani")
        scale = self.config.noise_scale
        if replace_modules(model, lambda m: type(m) is nn.BatchNorm2d, lambda n: NoisyBatchNorm2d(n, scale)) == 0:
            raise ValueError(f"{type(model).__name__} has no BatchNorm2d after which to inject noise")
        return model

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        if ctx.teacher is None:  # the engine passes the teacher whenever it gave one to prepare_model
            raise RuntimeError("ani starts from the benchmark's teacher; the benchmark must declare one")
        logits = model(images)
        return LossOutput(labelled_cross_entropy(logits, labels), logits=logits)
