"""Out-of-distribution detection: can a score of the logits tell test images from images of no class?

Scores follow one convention, higher = more in-distribution: maximum softmax probability (Hendrycks &
Gimpel 2017), maximum logit (Hendrycks et al. 2022) and negative energy T*logsumexp(logits/T) with
T = 1 (Liu et al. 2020). Detection metrics treat in-distribution as the positive class: AUROC,
FPR at 95% TPR and AUPR-In (average precision with in-distribution positive). All are sort-based
and treat tied scores as scikit-learn does, so the numbers do not depend on input order.

OOD sets: `noise_uniform` and `noise_gaussian_blobs` are generated here, seeded, with the test
images' shape; any other name in `EvaluationSettings.ood_sets` must come in `EvalInputs.ood_sets`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.columns import Column
from harness.evaluation.metrics import EvalCache, EvalInputs, metric, seeded_generator
from harness.evaluation.selective import class_and_abstain_logits

SCORES = ("msp", "max_logit", "energy")
DETECTION_METRICS = ("auroc", "fpr95", "aupr")


def ood_scores(logits: torch.Tensor, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Float64 scores [N] per name in SCORES; higher means more in-distribution."""
    logits = logits.double()
    return {
        "msp": logits.softmax(dim=1).max(dim=1).values,
        "max_logit": logits.max(dim=1).values,
        "energy": temperature * torch.logsumexp(logits / temperature, dim=1),  # = -energy
    }


def _labelled(in_scores: torch.Tensor, out_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All scores (float64, CPU) and their labels, 1 for in-distribution."""
    if in_scores.ndim != 1 or out_scores.ndim != 1 or len(in_scores) == 0 or len(out_scores) == 0:
        raise ValueError(
            f"need non-empty 1-d in- and out-of-distribution scores, got {tuple(in_scores.shape)} "
            f"and {tuple(out_scores.shape)}"
        )
    scores = torch.cat([in_scores, out_scores]).double().cpu()
    if not torch.isfinite(scores).all():
        raise ValueError("OOD scores must be finite; the model produced inf or NaN logits")
    labels = torch.cat([torch.ones(len(in_scores)), torch.zeros(len(out_scores))]).double()
    return scores, labels


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """P(in-score > out-score) + P(equal)/2: the Mann-Whitney statistic with mid-ranks for ties."""
    scores, labels = _labelled(in_scores, out_scores)
    values, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    rank_after = torch.cumsum(counts, 0).double()
    mid_rank = (rank_after - (counts.double() - 1) / 2)[inverse]  # 1-based, ties share their mean rank
    n_in, n_out = len(in_scores), len(out_scores)
    rank_sum = (mid_rank * labels).sum().item()
    return (rank_sum - n_in * (n_in + 1) / 2) / (n_in * n_out)


def fpr_at_tpr(in_scores: torch.Tensor, out_scores: torch.Tensor, tpr: float = 0.95) -> float:
    """Fraction of OOD inputs accepted at the highest threshold that accepts >= `tpr` of in-distribution.

    Inputs with score >= threshold are accepted; the threshold is a score value, as in sklearn's roc_curve.
    """
    _labelled(in_scores, out_scores)
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    needed = math.ceil(round(tpr * len(in_scores), 9))
    threshold = torch.sort(in_scores.double().cpu(), descending=True).values[needed - 1]
    return (out_scores.double().cpu() >= threshold).double().mean().item()


def aupr_in(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """Average precision with in-distribution positive: sum over thresholds of recall gain x precision."""
    scores, labels = _labelled(in_scores, out_scores)
    order = torch.sort(scores, descending=True, stable=True)
    labels = labels[order.indices]
    _, tie_sizes = torch.unique_consecutive(order.values, return_counts=True)
    at_threshold = torch.cumsum(tie_sizes, 0) - 1  # last position of each distinct score
    true_positives = torch.cumsum(labels, 0)[at_threshold]
    precision = true_positives / (at_threshold + 1).double()
    recall_gain = torch.diff(true_positives, prepend=true_positives.new_zeros(1)) / len(in_scores)
    return (recall_gain * precision).sum().item()


def detection_metrics(in_scores: torch.Tensor, out_scores: torch.Tensor) -> dict[str, float]:
    """{'auroc', 'fpr95', 'aupr'} for one score on one OOD set."""
    return {
        "auroc": auroc(in_scores, out_scores),
        "fpr95": fpr_at_tpr(in_scores, out_scores, 0.95),
        "aupr": aupr_in(in_scores, out_scores),
    }


def _uniform_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)


def _gaussian_blobs(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise blurred with sigma = side/14 (2 px at 28x28), rescaled per image to mid-grey +- blobs."""
    count, channels, height, width = shape
    sigma = max(1.0, min(height, width) / 14)
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    noise = torch.randn(shape, generator=generator)
    blurred = F.conv2d(
        noise, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), padding=(radius, 0), groups=channels
    )
    blurred = F.conv2d(
        blurred, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), padding=(0, radius), groups=channels
    )
    flat = blurred.flatten(1)
    standardised = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp(min=1e-12)
    return ((0.5 + 0.2 * standardised).clamp(0, 1) * 255).round().to(torch.uint8).view(shape)


SYNTHETIC_OOD_SETS: dict[str, Callable[[tuple[int, ...], torch.Generator], torch.Tensor]] = {
    "noise_uniform": _uniform_noise,
    "noise_gaussian_blobs": _gaussian_blobs,
}
_SYNTHETIC_STREAM = 100  # random streams 100, 101, ... of `seeded_generator`, one per synthetic set


def synthetic_ood_images(name: str, image_shape: tuple[int, ...], count: int, seed: int) -> torch.Tensor:
    """uint8 [count, C, H, W] images of a synthetic OOD set; the same for every model with the same seed."""
    if name not in SYNTHETIC_OOD_SETS:
        raise ValueError(f"unknown synthetic OOD set '{name}'; known: {', '.join(SYNTHETIC_OOD_SETS)}")
    stream = _SYNTHETIC_STREAM + list(SYNTHETIC_OOD_SETS).index(name)
    return SYNTHETIC_OOD_SETS[name]((count, *image_shape), seeded_generator(seed, stream))


def _ood_images(inputs: EvalInputs, name: str) -> torch.Tensor:
    if name in inputs.ood_sets:
        return inputs.ood_sets[name]
    if name in SYNTHETIC_OOD_SETS:
        shape = tuple(inputs.images.shape[1:])
        return synthetic_ood_images(name, shape, inputs.settings.ood_synthetic_size, inputs.settings.seed)
    raise ValueError(
        f"OOD set '{name}' is listed in evaluation.ood_sets but was not supplied: pass its uint8 images as "
        f"EvalInputs(ood_sets={{'{name}': ...}}), or use a synthetic set ({', '.join(SYNTHETIC_OOD_SETS)})"
    )


@metric(
    "ood",
    "OOD detection of each evaluation.ood_sets set against the test images by MSP, max logit and negative "
    "energy: AUROC, FPR at 95% TPR and AUPR-In (in-distribution positive); ood_auroc_mean averages MSP AUROC.",
    *(Column(f"{{split}}/ood_{{ood_set}}_{score}_{stat}", "lower" if stat == "fpr95" else "higher", "fraction",
             "detail") for score in SCORES for stat in DETECTION_METRICS),
    Column("{split}/ood_auroc_mean", "higher", "fraction"),
    expand={"ood_set": "ood_sets"},
)  # fmt: skip
def _ood(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    class_logits, _ = class_and_abstain_logits(cache.clean_logits(), inputs.num_classes)
    in_scores = ood_scores(class_logits)
    columns: dict[str, float] = {}
    msp_auroc = []
    for name in inputs.settings.ood_sets:
        logits = cache.logits_of(f"ood/{name}", _ood_images(inputs, name))
        out_scores = ood_scores(class_and_abstain_logits(logits, inputs.num_classes)[0])
        for score in SCORES:
            for stat, value in detection_metrics(in_scores[score], out_scores[score]).items():
                columns[f"{inputs.split}/ood_{name}_{score}_{stat}"] = value
        msp_auroc.append(columns[f"{inputs.split}/ood_{name}_msp_auroc"])
    columns[f"{inputs.split}/ood_auroc_mean"] = sum(msp_auroc) / len(msp_auroc) if msp_auroc else math.nan
    return columns
