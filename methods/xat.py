"""xAT: adversarial training with multiplicative perturbations (Yang and Ji, "Learning with Multiplicative
Perturbations", ICPR 2020; catalogue T23).

Adversarial training perturbs x additively (x + r, ||r|| <= eps). xAT perturbs it multiplicatively,
x' = x * m, with a per-pixel factor m shared by the channels: dark pixels stay dark and the changes
follow the image's structure. The model fits both views:

    L = (1 - a) * CE(f(x), y) + a * CE(f(x * m), y),   m = argmax_{m in [1 - eps, 1 + eps]} CE(f(x * m), y)

Assumptions (the abstract gives no generator): the authors' code draws m from an L0-regularised
hard-concrete mask, either fitted per training example (transductive) or produced by a generator
network (inductive). Both need state the harness does not give a method (per-example indices, a second
optimiser), so m is fitted per batch instead: a random start in the box, then k projected sign-gradient
ascent steps, the box bound playing the role of the L0 budget. With eps = 1 the box spans the code's
range of masks (x * m from black to double brightness); x * m is clipped to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.evaluation.attacks import default_pgd_step_size
from harness.method import Claim, LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.search_space import FloatRange


class XATConfig(MethodConfig):
    epsilon: float = Field(0.5, gt=0.0, le=1.0, description="the factor m ranges over [1 - eps, 1 + eps]")
    steps: int = Field(1, ge=1, description="k: ascent steps on the factor")
    step_size: float | None = Field(None, gt=0.0, description="per-step move of m; default 2.5 * eps / k")
    adversarial_weight: float = Field(0.5, ge=0.0, le=1.0, description="a: weight of the perturbed-input loss")


def multiplicative_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epsilon: float,
                          steps: int, step_size: float) -> torch.Tensor:
    """x * m for the per-pixel factor m in [1 - eps, 1 + eps] (shared by the channels) that k sign-gradient
    steps from a uniform random start find to maximise the cross-entropy; clipped to [0, 1], detached."""
    images = images.detach()
    low, high = 1.0 - epsilon, 1.0 + epsilon
    factor = torch.empty_like(images[:, :1]).uniform_(low, high)
    for _ in range(steps):
        factor.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model((images * factor).clamp(0.0, 1.0)).float(), labels, reduction="sum")
            (gradient,) = torch.autograd.grad(loss, factor)
        factor = (factor.detach() + step_size * gradient.sign()).clamp(low, high)
    return (images * factor).clamp(0.0, 1.0).detach()


@register_method
class MultiplicativeAdversarialTraining(Method):
    """Train on clean inputs and on inputs scaled pixel-wise by a worst-case factor near 1."""

    info = MethodInfo(
        name="xat",
        summary="xAT: adversarial training on per-pixel multiplicative perturbations x * m, m in [1-eps, 1+eps].",
        paper="Yang, Ji, Learning with Multiplicative Perturbations, ICPR 2020",
        cost_factor=3.0,  # at the default 1 step: 1 attack pass and 2 trained passes (clean and perturbed),
        claim=Claim("multiplicative adversarial training matches or beats additive AT accuracy, about 30% faster",
                    kind="no_worse", margin=0.01, baseline="pgd_at"),
    )
    Config = XATConfig
    search_space = {"epsilon": FloatRange(low=0.1, high=1.0), "adversarial_weight": FloatRange(low=0.2, high=1.0)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        cfg = self.config
        step_size = cfg.step_size or default_pgd_step_size(cfg.epsilon, cfg.steps)
        perturbed = multiplicative_attack(model, images, labels, epsilon=cfg.epsilon, steps=cfg.steps,
                                          step_size=step_size)
        robust = F.cross_entropy(model(perturbed).float(), labels)
        if cfg.adversarial_weight == 1.0:
            return LossOutput(robust, parts={"perturbed": robust.detach()})
        logits = model(images)
        clean = F.cross_entropy(logits.float(), labels)
        loss = (1.0 - cfg.adversarial_weight) * clean + cfg.adversarial_weight * robust
        return LossOutput(loss, parts={"clean": clean.detach(), "perturbed": robust.detach()}, logits=logits)
