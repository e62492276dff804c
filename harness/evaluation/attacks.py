"""Adversarial attacks on images in [0,1] pixel units: FGSM and PGD in the L-inf ball, PGD in the L2 ball.

`pgd_linf` serves both the robustness metrics and the PGD adversarial-training method, so every attack is
device-agnostic, leaves the model exactly as it found it (train/eval mode, parameter `.grad`), and
differentiates with respect to the input only, which also spares the backward pass any weight gradients.
Random starts come from the caller's generator, drawn on that generator's device, so a seeded CPU
generator gives the same start on every device.

Stochastic models (random at test time, e.g. noise injection) are attacked with expectation over
transformation (EOT, Athalye et al. 2018): with `eot_samples` = k, each step follows the loss gradient
summed over k independent forward passes, and `expected_prediction` classifies by the mean softmax
of k passes. With k = 1 (deterministic models) both reduce to the plain attack and the plain argmax.
"""

from __future__ import annotations

from collections.abc import Callable

import pydantic
import torch
import torch.nn.functional as F
from pydantic import Field

from harness.schema import Strict

Step = Callable[[torch.Tensor], torch.Tensor]  # loss gradient -> move of the adversarial images
Projection = Callable[[torch.Tensor], torch.Tensor]  # moved images -> back into the ball and [0,1]


def epsilon_label(epsilon: float) -> str:
    """An epsilon as it appears in column names: up to 6 decimals, '.' -> 'p' (0.05 -> '0p05', 2.0 -> '2')."""
    text = f"{epsilon:.6f}".rstrip("0").rstrip(".")
    return text.replace(".", "p")


def check_epsilon_grid(epsilons: tuple[float, ...], norm: str) -> tuple[float, ...]:
    """Raise unless the grid starts at 0, increases strictly and names distinct columns."""
    if len(epsilons) < 2 or epsilons[0] != 0.0:
        raise ValueError(
            f"an epsilon grid needs 0.0 first and at least one radius after it (the curve starts at the clean "
            f"accuracy and its area is taken from 0), got {list(epsilons)}"
        )
    if any(later <= earlier for earlier, later in zip(epsilons, epsilons[1:], strict=False)):
        raise ValueError(f"epsilons must increase strictly, got {list(epsilons)}")
    if norm == "linf" and epsilons[-1] > 1.0:
        raise ValueError(f"L-inf radii are in [0,1] pixel units, got {epsilons[-1]}")
    labels = [epsilon_label(epsilon) for epsilon in epsilons]
    if len(set(labels)) != len(labels):
        raise ValueError(f"epsilons closer than 1e-6 would share a column name: {list(epsilons)} -> {labels}")
    return tuple(float(epsilon) for epsilon in epsilons)


class AttackSettings(Strict):
    """The attack family's part of `EvaluationSettings`: `pgd_linf`, `robustness_curve` and `autoattack`."""


    pgd_epsilon: float = Field(
        0.1, ge=0.0, le=1.0, description="L-inf radius of the PGD attack, in [0,1] pixel units."
    )
    pgd_steps: int = Field(10, ge=1, description="Number of PGD steps.")
    pgd_step_size: float | None = Field(
        None,
        gt=0.0,
        description="PGD step size in [0,1] pixel units; None means 2.5*epsilon/steps (Madry et al.).",
    )
    robust_subset: int = Field(
        1000,
        ge=1,
        description="Number of test examples attacked: the first n of a seeded, class-balanced random order "
        "(the same examples for every model with the same seed).",
    )
    linf_epsilons: tuple[float, ...] = Field(
        (0.0, 0.02, 0.05, 0.1, 0.2),
        description="L-inf radii ([0,1] pixel units) of the `robustness_curve` FGSM and PGD curves: 0.0 first, "
        "strictly increasing; one column each, named by the radius with '.' -> 'p' (0.05 -> e0p05).",
    )
    l2_epsilons: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5, 1.0, 2.0),
        description="L2 radii ([0,1] pixel units, whole image) of the `robustness_curve` PGD-L2 curve: 0.0 "
        "first, strictly increasing.",
    )
    curve_subset: int = Field(
        500, ge=1, description="Test examples of `robustness_curve`: the first n of the robust_subset order."
    )
    eot_samples: int = Field(
        10,
        ge=1,
        description="Forward passes averaged per attack gradient and per prediction (expectation over "
        "transformation) when the method is stochastic (a random defence attacked with one sample looks "
        "more robust than it is); deterministic models always use 1.",
    )
    autoattack_epsilon: float = Field(
        8 / 255, ge=0.0, le=1.0, description="L-inf radius of the `autoattack` metric, in [0,1] pixel units."
    )
    autoattack_subset: int = Field(
        100, ge=1, description="Test examples of `autoattack`: the first n of the robust_subset order."
    )

    @pydantic.field_validator("linf_epsilons", "l2_epsilons")
    @classmethod
    def _valid_epsilon_grid(cls, epsilons: tuple[float, ...], info: pydantic.ValidationInfo) -> tuple[float, ...]:
        return check_epsilon_grid(epsilons, "linf" if info.field_name == "linf_epsilons" else "l2")

    @property
    def linf_epsilon_labels(self) -> tuple[str, ...]:
        """`linf_epsilons` as they appear in column names (0.05 -> '0p05')."""
        return tuple(epsilon_label(epsilon) for epsilon in self.linf_epsilons)

    @property
    def l2_epsilon_labels(self) -> tuple[str, ...]:
        """`l2_epsilons` as they appear in column names (0.25 -> '0p25')."""
        return tuple(epsilon_label(epsilon) for epsilon in self.l2_epsilons)


def default_pgd_step_size(epsilon: float, steps: int) -> float:
    """Madry et al. (2018): 2.5 * epsilon / steps, enough to reach any corner from a random start."""
    return 2.5 * epsilon / steps


def _check(epsilon: float, steps: int, step_size: float, eot_samples: int) -> None:
    if epsilon < 0 or steps < 0 or step_size < 0:
        raise ValueError(f"epsilon, steps and step_size must be >= 0, got {epsilon}, {steps}, {step_size}")
    if eot_samples < 1:
        raise ValueError(f"eot_samples must be >= 1 (1 means no EOT), got {eot_samples}")


def _per_example_norm(tensor: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each example, shaped [B,1,...,1] to broadcast against the batch."""
    return tensor.flatten(1).norm(dim=1).view(-1, *[1] * (tensor.ndim - 1))


def _random_start(images: torch.Tensor, epsilon: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise in [-epsilon, epsilon], drawn on the generator's device so a CPU generator
    gives the same start on every device."""
    device = generator.device if generator is not None else images.device
    noise = torch.rand(images.shape, generator=generator, device=device, dtype=images.dtype)
    return (2 * noise - 1).mul_(epsilon).to(images.device)


def _random_start_l2(images: torch.Tensor, epsilon: float, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform in the L2 ball of radius epsilon: a Gaussian direction, radius epsilon * U^(1/d)."""
    device = generator.device if generator is not None else images.device
    direction = torch.randn(images.shape, generator=generator, device=device, dtype=images.dtype)
    uniform = torch.rand(images.shape[0], generator=generator, device=device, dtype=images.dtype)
    radius = epsilon * uniform.pow(1.0 / images[0].numel()).view(-1, *[1] * (images.ndim - 1))
    return (direction * radius / _per_example_norm(direction).clamp_min(1e-12)).to(images.device)


def loss_gradient(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, eot_samples: int = 1
) -> torch.Tensor:
    """Gradient of the summed cross-entropy with respect to `images`, summed over `eot_samples` passes.

    Summed, not averaged: attacks use only its sign or direction, and a sum keeps tiny gradients from
    underflowing. Each pass draws the model's own randomness anew (EOT).
    """
    images = images.detach().requires_grad_(True)
    gradient = None
    with torch.enable_grad():
        for _ in range(eot_samples):
            loss = F.cross_entropy(model(images), labels, reduction="sum")
            (sample_gradient,) = torch.autograd.grad(loss, images)
            gradient = sample_gradient if gradient is None else gradient + sample_gradient
    return gradient


def _ascend(
    model: torch.nn.Module, start: torch.Tensor, labels: torch.Tensor, steps: int,
    step: Step, project: Projection, eot_samples: int,
) -> torch.Tensor:  # fmt: skip
    """`steps` rounds of: move along the loss gradient, then project back. Returns detached images."""
    adversarial = start.detach()
    for _ in range(steps):
        gradient = loss_gradient(model, adversarial, labels, eot_samples)
        adversarial = project(adversarial + step(gradient)).detach()
    return adversarial


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
    eot_samples: int = 1,
) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy inside the L-inf ball (Madry et al. 2018).

    `images` are floats in [0,1]; the result lies within `epsilon` of them (L-inf) and in [0,1],
    and is detached. Each step moves every pixel by `step_size` along the gradient's sign, then
    clips. The model runs in whatever mode it is in (in train mode its BatchNorm running
    statistics are updated by the attack's forward passes, as in Madry's reference code).
    """
    _check(epsilon, steps, step_size, eot_samples)
    images = images.detach()
    if epsilon == 0:
        return images.clone()
    lower = (images - epsilon).clamp_(0.0, 1.0)
    upper = (images + epsilon).clamp_(0.0, 1.0)

    def project(moved: torch.Tensor) -> torch.Tensor:
        return torch.clamp(moved, lower, upper)

    start = project(images + _random_start(images, epsilon, generator)) if random_start else images.clone()
    return _ascend(model, start, labels, steps, lambda g: step_size * g.sign(), project, eot_samples)


def fgsm_linf(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    eot_samples: int = 1,
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size epsilon along the sign of the
    loss gradient at the clean images, clipped to [0,1]. PGD-L-inf with one step and no random start."""
    return pgd_linf(
        model, images, labels, epsilon=epsilon, steps=1, step_size=epsilon, random_start=False,
        eot_samples=eot_samples,
    )  # fmt: skip


def pgd_l2(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    steps: int,
    step_size: float,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy inside the L2 ball (Madry et al. 2018).

    Each step moves every example by `step_size` along its normalised gradient, rescales the
    perturbation onto the ball of radius `epsilon` if it left it, then clips to [0,1] (clipping only
    shrinks the perturbation, so the result stays in the ball). The random start is uniform in the ball.
    """
    _check(epsilon, steps, step_size, eot_samples)
    images = images.detach()
    if epsilon == 0:
        return images.clone()

    def step(gradient: torch.Tensor) -> torch.Tensor:
        return step_size * gradient / _per_example_norm(gradient).clamp_min(1e-12)  # zero gradient: no move

    def project(moved: torch.Tensor) -> torch.Tensor:
        delta = moved - images
        delta = delta * (epsilon / _per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return (images + delta).clamp_(0.0, 1.0)

    start = project(images + _random_start_l2(images, epsilon, generator)) if random_start else images.clone()
    return _ascend(model, start, labels, steps, step, project, eot_samples)


def expected_prediction(model: torch.nn.Module, images: torch.Tensor, eot_samples: int = 1) -> torch.Tensor:
    """Predicted classes [B]: argmax of the logits, or for `eot_samples` > 1 the argmax of the mean softmax
    over that many forward passes (the expected prediction, which unlike a majority vote has no ties to break
    and weighs confident passes more)."""
    if eot_samples < 1:
        raise ValueError(f"eot_samples must be >= 1 (1 means no EOT), got {eot_samples}")
    with torch.no_grad():
        if eot_samples == 1:
            return model(images).argmax(dim=1)
        probabilities = sum(model(images).double().softmax(dim=1) for _ in range(eot_samples))
        return probabilities.argmax(dim=1)
