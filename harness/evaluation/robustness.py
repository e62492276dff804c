"""Accuracy-perturbation curves and their area (AUAC), and AutoAttack, as metrics.

A single epsilon compares defences unfairly: they react differently to different perturbation sizes
(catalogue P2/P3). `robustness_curve` attacks the same seeded class-balanced subset (the first
`curve_subset` of `robust_subset_indices`) with FGSM-L-inf, PGD-L-inf and PGD-L2 at every epsilon of
`linf_epsilons` / `l2_epsilons`. Each (attack, epsilon) draws its random starts from a generator seeded
by the attack's name only, so every epsilon, and every model, starts from the same unit noise.

Columns, with `{split}` the evaluated split, `{attack}` each of ATTACKS and `{eps}` each epsilon of the
attack's grid written by `epsilon_label` (0.05 -> 0p05):

- `{split}/adv_{attack}_e{eps}_accuracy`: robust accuracy, the fraction of the subset that is correct
  both clean and under the attack (at epsilon 0: the clean accuracy on the subset, exactly);
- `{split}/adv_{attack}_auac`: `auac` of that curve, in [0,1], equal to the accuracy for a flat curve.

PGD uses `pgd_steps` steps of 2.5 * epsilon / steps (Madry et al.) at every epsilon. Stochastic models
(`EvalInputs.stochastic`) are attacked and classified with EOT over `eot_samples` passes; see `attacks`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import nn

from harness.columns import Column
from harness.evaluation.attacks import (
    check_epsilon_grid,
    default_pgd_step_size,
    epsilon_label,
    expected_prediction,
    fgsm_linf,
    pgd_l2,
    pgd_linf,
)
from harness.evaluation.metrics import (
    EvalCache,
    EvalInputs,
    class_model,
    eot_samples_of,
    iterate_batches,
    metric,
    robust_subset_indices,
    seeded_generator,
)

ATTACKS: dict[str, str] = {"fgsm_linf": "linf", "pgd_linf": "linf", "pgd_l2": "l2"}  # attack -> its grid
TORCHATTACKS_INSTALL = "pip install --no-deps torchattacks==3.5.1"


def auac(epsilons: Sequence[float], accuracies: Sequence[float]) -> float:
    """Normalised area under the accuracy-perturbation curve: the trapezoid rule over the grid divided by
    its largest epsilon, so a model whose accuracy stays at a over the whole grid scores a."""
    check_epsilon_grid(tuple(epsilons), "l2")
    if len(accuracies) != len(epsilons):
        raise ValueError(f"need one accuracy per epsilon, got {len(accuracies)} for {len(epsilons)}")
    area = sum(
        (right - left) * (accuracies[i] + accuracies[i + 1]) / 2
        for i, (left, right) in enumerate(zip(epsilons, epsilons[1:], strict=False))
    )
    return area / epsilons[-1]


def attacked_model(inputs: EvalInputs) -> nn.Module:
    """The model as attacks see it: class logits only."""
    return class_model(inputs)


def attack_generator(seed: int, attack: str) -> torch.Generator:
    """The random-start stream of one attack, named by the attack, the same at every epsilon."""
    return seeded_generator(seed, stream=2_000 + zlib.crc32(f"robustness/{attack}".encode()))


def run_attack(
    attack: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
    epsilon: float, steps: int, generator: torch.Generator | None, eot_samples: int = 1,
) -> torch.Tensor:  # fmt: skip
    """Adversarial images of one of ATTACKS at `epsilon`; PGD runs `steps` steps of 2.5 * epsilon / steps."""
    if attack == "fgsm_linf":
        return fgsm_linf(model, images, labels, epsilon=epsilon, eot_samples=eot_samples)
    pgd = {"pgd_linf": pgd_linf, "pgd_l2": pgd_l2}.get(attack)
    if pgd is None:
        raise ValueError(f"unknown attack '{attack}'; known: {', '.join(ATTACKS)}")
    step_size = default_pgd_step_size(epsilon, steps)
    return pgd(
        model, images, labels, epsilon=epsilon, steps=steps, step_size=step_size, random_start=True,
        generator=generator, eot_samples=eot_samples,
    )  # fmt: skip


def grid_of(inputs: EvalInputs, attack: str) -> tuple[float, ...]:
    """The epsilon grid of an attack's norm."""
    settings = inputs.settings
    return settings.linf_epsilons if ATTACKS[attack] == "linf" else settings.l2_epsilons


def accuracy_curves(inputs: EvalInputs) -> dict[str, list[float]]:
    """Per attack, the robust accuracy at each epsilon of its grid, on the curve subset."""
    settings, model, eot = inputs.settings, attacked_model(inputs), eot_samples_of(inputs)
    grids = {attack: grid_of(inputs, attack) for attack in ATTACKS}
    generators = {
        (attack, epsilon): attack_generator(settings.seed, attack)
        for attack, grid in grids.items() for epsilon in grid if epsilon > 0
    }  # fmt: skip
    correct = dict.fromkeys(generators, 0)
    subset = robust_subset_indices(inputs.labels, settings.curve_subset, settings.seed)
    clean_correct = 0
    for images, labels in iterate_batches(inputs, subset):
        clean = expected_prediction(model, images, eot) == labels
        clean_correct += clean.sum().item()
        for (attack, epsilon), generator in generators.items():
            adversarial = run_attack(
                attack, model, images, labels, epsilon=epsilon, steps=settings.pgd_steps,
                generator=generator, eot_samples=eot,
            )  # fmt: skip
            robust = clean & (expected_prediction(model, adversarial, eot) == labels)
            correct[attack, epsilon] += robust.sum().item()
    size = subset.shape[0]
    return {
        attack: [(correct[attack, epsilon] if epsilon > 0 else clean_correct) / size for epsilon in grid]
        for attack, grid in grids.items()
    }


@metric(
    "robustness_curve",
    "Accuracy-perturbation curves (FGSM-L-inf, PGD-L-inf, PGD-L2 over the linf_epsilons / l2_epsilons grids, "
    "pgd_steps steps, seeded random starts, EOT for stochastic models) on a seeded class-balanced subset, "
    "and per attack the normalised area under the curve (AUAC).",
    *(Column(f"{{split}}/adv_{attack}_e{{linf_eps}}_accuracy", "higher", "fraction", "detail")
      for attack, norm in ATTACKS.items() if norm == "linf"),
    *(Column(f"{{split}}/adv_{attack}_e{{l2_eps}}_accuracy", "higher", "fraction", "detail")
      for attack, norm in ATTACKS.items() if norm == "l2"),
    *(Column(f"{{split}}/adv_{attack}_auac", "higher", "fraction") for attack in ATTACKS),
    expand={"linf_eps": "linf_epsilon_labels", "l2_eps": "l2_epsilon_labels"},
)  # fmt: skip
def _robustness_curve(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    columns: dict[str, float] = {}
    for attack, accuracies in accuracy_curves(inputs).items():
        grid = grid_of(inputs, attack)
        for epsilon, accuracy in zip(grid, accuracies, strict=True):
            columns[f"{inputs.split}/adv_{attack}_e{epsilon_label(epsilon)}_accuracy"] = accuracy
        columns[f"{inputs.split}/adv_{attack}_auac"] = auac(grid, accuracies)
    return columns


def _import_torchattacks() -> ModuleType:
    try:
        import torchattacks
    except ImportError as error:
        raise ImportError(
            f"metric 'autoattack' needs the optional package torchattacks: {TORCHATTACKS_INSTALL} "
            "(--no-deps because its requests~=2.25.1 pin would downgrade the requests Ray needs; its other "
            f"dependencies, scipy and tqdm, come with the harness) ({error})"
        ) from error
    return torchattacks


@metric(
    "autoattack",
    "Robust accuracy under standard L-inf AutoAttack (Croce & Hein 2020: APGD-CE, APGD-T, FAB-T, Square; the "
    "'rand' version with EOT for stochastic models) at autoattack_epsilon on a seeded class-balanced subset. "
    f"Needs torchattacks: {TORCHATTACKS_INSTALL}.",
    Column("{split}/autoattack_linf_accuracy", "higher", "fraction"),
)
def _autoattack(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    torchattacks = _import_torchattacks()
    settings, model, eot = inputs.settings, attacked_model(inputs), eot_samples_of(inputs)
    subset = robust_subset_indices(inputs.labels, settings.autoattack_subset, settings.seed)
    num_classes = inputs.num_classes or cache.clean_logits().shape[1]
    attack = torchattacks.AutoAttack(
        model, norm="Linf", eps=settings.autoattack_epsilon, version="rand" if inputs.stochastic else "standard",
        n_classes=num_classes, seed=settings.seed,
    )  # fmt: skip
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    robust_correct = 0
    with torch.random.fork_rng(devices=devices):  # torchattacks reseeds the global generators
        for images, labels in iterate_batches(inputs, subset):
            clean = expected_prediction(model, images, eot) == labels
            adversarial = attack(images, labels) if settings.autoattack_epsilon > 0 else images
            robust_correct += (clean & (expected_prediction(model, adversarial, eot) == labels)).sum().item()
    return {f"{inputs.split}/autoattack_linf_accuracy": robust_correct / subset.shape[0]}
