"""BoS, boundary optimised samples training (Marson, Li and Maki, "Boundary Optimised Samples Training for
Detecting Out-Of-Distribution Images", ICPR 2020; catalogue T56).

The classifier should give low maximum softmax probability (MSP) to inputs away from the training data.
BoS makes "boundary samples" without a GAN: it back-propagates a designed loss to input samples until
they lie on a level hypersurface of that loss, then trains the network to be uncertain on them, beside
the cross-entropy on the real images:

    L = CE(f(x), y) + ood_weight * KL(uniform || softmax(f(x_b))),   x_b on {x : g(x) = tau}

Assumptions (the abstract names neither the loss nor the schedule): the designed loss is the
confidence loss g(x) = -log MSP(x), the level tau = -log(boundary_msp), and the search starts away from
the data, at (1 - init_mix) * image + init_mix * uniform noise. Each search step is a Newton step towards
the level set along the input gradient, x <- x - (g - tau) grad g / |grad g|^2, clipped to the [0, 1] box;
only samples that start more confident than the level move (the search never raises confidence: pulling
uncertain noise up to the level made the uniform target fight the data, and training collapsed). The
search and the uniform-target forward run in eval mode, i.e. with the network that is scored at test
time (BatchNorm on running statistics, which they leave alone); the real images train in train mode as
in ERM. Evaluated with the `ood` metric (MSP AUROC and friends).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


class BoSConfig(MethodConfig):
    boundary_msp: float = Field(0.5, gt=0.0, lt=1.0,
                                description="maximum softmax probability on the level set of the boundary samples")
    ood_weight: float = Field(0.5, ge=0.0, description="weight of the uniform-prediction loss on boundary samples")
    search_steps: int = Field(3, ge=1, le=50, description="Newton steps of the input search towards the level set")
    init_mix: float = Field(0.7, ge=0.0, le=1.0,
                            description="the search starts from (1 - m) * image + m * uniform noise: how far from the data")


def confidence_loss(logits: torch.Tensor) -> torch.Tensor:
    """g = -log MSP = logsumexp(z) - max z per sample [B]: 0 when certain, log K when uniform."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=1) - logits.max(dim=1).values


def boundary_samples(model: nn.Module, start: torch.Tensor, level: float, steps: int) -> torch.Tensor:
    """Move `start` (images in [0, 1]) onto the level set {g = level} of the confidence loss by Newton steps
    along the input gradient, in eval mode; samples that start less confident than the level stay put
    (the search only lowers confidence). Returns detached images; the model's parameter gradients and
    its train/eval mode are left as they were."""
    was_training = model.training
    model.eval()
    samples = start.detach().clone()
    moving: torch.Tensor | None = None  # the samples that start more confident than the level set
    try:
        with torch.enable_grad():
            for _ in range(steps):
                samples.requires_grad_(True)
                gap = level - confidence_loss(model(samples))  # > 0: more confident than the level set
                (grad,) = torch.autograd.grad(gap.sum(), samples)
                moving = gap.detach() > 0 if moving is None else moving
                gap = gap.detach() * moving  # samples that start less confident stay where they are
                norm2 = grad.flatten(1).pow(2).sum(1).clamp(min=1e-12)
                step = (gap / norm2).view(-1, *([1] * (grad.ndim - 1))) * grad
                samples = (samples.detach() - step).clamp(0.0, 1.0)
    finally:
        model.train(was_training)
    return samples.detach()


def uniform_kl(logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(uniform || softmax(z)) = mean over samples of (-mean_k log p_k - log K); 0 iff uniform."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    return (-log_probs.mean(dim=1) - math.log(logits.shape[1])).mean()


def _eval_mode_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits with gradients, as the model computes them at test time (BatchNorm on running statistics)."""
    was_training = model.training
    model.eval()
    try:
        return model(images)
    finally:
        model.train(was_training)


@register_method
class BoundaryOptimisedSamples(Method):
    """Cross-entropy on the data plus uniform predictions on samples moved to an MSP level set."""

    info = MethodInfo(
        name="bos",
        summary="Train low confidence on boundary samples found by input-gradient search to an MSP level set.",
        paper="Marson, Li, Maki, Boundary Optimised Samples Training for Detecting Out-Of-Distribution Images, "
              "ICPR 2020",
        cost_factor=4.0,  # 3 input-gradient passes + an extra forward/backward on the boundary batch (~3.6-4x on CPU)
        claim=Claim("training on boundary-optimised samples improves MSP out-of-distribution detection over the baseline", metric="test/ood_auroc_mean"),
    )
    Config = BoSConfig
    search_space = {"boundary_msp": FloatRange(low=0.2, high=0.9),
                    "ood_weight": FloatRange(low=0.05, high=2.0, log=True),
                    "init_mix": FloatRange(low=0.3, high=1.0)}

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        cfg = self.config
        # torch's global RNG (checkpointed by the engine), not ctx.generator: the data order stays that of ERM
        start = torch.lerp(images, torch.rand_like(images), cfg.init_mix)
        boundary = boundary_samples(ctx.plain_model(model), start, -math.log(cfg.boundary_msp),
                                    cfg.search_steps)
        real = model(images)
        outer = _eval_mode_logits(ctx.plain_model(model), boundary.to(images.dtype))
        supervised = labelled_cross_entropy(real, labels)
        uncertain = uniform_kl(outer)
        loss = supervised + cfg.ood_weight * uncertain
        return LossOutput(loss, parts={"ce": supervised.detach(), "boundary_kl": uncertain.detach()}, logits=real)
