"""Adversarial attacks on images in [0,1] pixel units.

`pgd_linf` serves both the robustness metric and the PGD adversarial-training method, so it is
device-agnostic, leaves the model exactly as it found it (train/eval mode, parameter `.grad`), and
differentiates with respect to the input only, which also spares the backward pass any weight
gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def default_pgd_step_size(epsilon: float, steps: int) -> float:
    """Madry et al. (2018): 2.5 * epsilon / steps, enough to reach any corner from a random start."""
    return 2.5 * epsilon / steps


def _random_start(images: torch.Tensor, epsilon: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise in [-epsilon, epsilon], drawn on the generator's device so a CPU generator
    gives the same start on every device."""
    device = generator.device if generator is not None else images.device
    noise = torch.rand(images.shape, generator=generator, device=device, dtype=images.dtype)
    return (2 * noise - 1).mul_(epsilon).to(images.device)


def pgd_linf(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    steps: int,
    step_size: float,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy inside the L-inf ball (Madry et al. 2018).

    `images` are floats in [0,1]; the result lies within `epsilon` of them (L-inf) and in [0,1],
    and is detached. The model runs in whatever mode it is in (in train mode its BatchNorm running
    statistics are updated by the attack's forward passes, as in Madry's reference code).
    """
    if epsilon < 0 or steps < 0 or step_size < 0:
        raise ValueError(f"epsilon, steps and step_size must be >= 0, got {epsilon}, {steps}, {step_size}")
    images = images.detach()
    if epsilon == 0:
        return images.clone()
    lower = (images - epsilon).clamp_(0.0, 1.0)
    upper = (images + epsilon).clamp_(0.0, 1.0)
    adversarial = images.clone()
    if random_start:
        adversarial = torch.clamp(adversarial + _random_start(images, epsilon, generator), lower, upper)
    with torch.enable_grad():
        for _ in range(steps):
            adversarial.requires_grad_(True)
            # Summed, not averaged: only the sign is used, and a sum keeps tiny gradients from underflowing.
            loss = F.cross_entropy(model(adversarial), labels, reduction="sum")
            (gradient,) = torch.autograd.grad(loss, adversarial)
            adversarial = adversarial.detach() + step_size * gradient.sign()
            adversarial = torch.clamp(adversarial, lower, upper)
    return adversarial.detach()
