"""Selective classification: how the error rate falls when the model may decline its least confident inputs.

A model answers the fraction `coverage` of inputs it is most confident about; the selective risk is
its error rate on those. The risk-coverage curve, its area (AURC) and the excess over the best
possible ranking (E-AURC) come from Geifman & El-Yaniv (2017) and Geifman et al. (ICLR 2019).

Confidence is the maximum softmax probability, unless the model has an abstain output. Abstain
convention: a model trained to abstain returns K+1 logits, the last being the abstention logit,
and `EvalInputs.num_classes` is K; its confidence is 1 - softmax(all K+1 logits)[K] and its
prediction is the argmax of the first K logits.
"""

from __future__ import annotations

import math

import torch

from harness.columns import Column
from harness.evaluation.metrics import EvalCache, EvalInputs, metric

COVERAGES = (1.0, 0.95, 0.9, 0.8)  # fixed selective-risk columns, as reported in P7 of the catalogue
CURVE_POINTS = 20  # the dashboard's risk-coverage curve: coverage 1/20, 2/20, ..., 1


def class_and_abstain_logits(
    logits: torch.Tensor, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split [N,K+1] logits into the class logits [N,K] and the abstention logit [N] (None if absent)."""
    if logits.ndim != 2:
        raise ValueError(f"expected logits [N,K], got {tuple(logits.shape)}")
    if num_classes is None or logits.shape[1] == num_classes:
        return logits, None
    if logits.shape[1] == num_classes + 1:
        return logits[:, :num_classes], logits[:, num_classes]
    raise ValueError(
        f"the model returns {logits.shape[1]} logits but the dataset has {num_classes} classes: expected "
        f"{num_classes}, or {num_classes + 1} with the last column the abstention logit"
    )


def confidence_and_prediction(
    logits: torch.Tensor, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 confidence [N] and predicted class [N]: max softmax probability, or 1 - P(abstain)."""
    class_logits, abstain = class_and_abstain_logits(logits, num_classes)
    prediction = class_logits.argmax(dim=1)
    if abstain is None:
        return class_logits.double().softmax(dim=1).max(dim=1).values, prediction
    return 1.0 - logits.double().softmax(dim=1)[:, -1], prediction


def _check(confidence: torch.Tensor, errors: torch.Tensor) -> None:
    if confidence.ndim != 1 or confidence.shape != errors.shape or confidence.shape[0] == 0:
        raise ValueError(
            f"expected confidence [N] and errors [N] with N >= 1, got {tuple(confidence.shape)} "
            f"and {tuple(errors.shape)}"
        )


def risk_coverage_curve(confidence: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    """Selective risk [N] at coverage n/N for n = 1..N, accepting the most confident inputs first.

    `errors` is 1 where the prediction is wrong. Inputs with equal confidence cannot be told apart,
    so inside a tie the error count is interpolated linearly: the expectation over random
    tie-breaking, which makes the curve independent of the order of the inputs.
    """
    _check(confidence, errors)
    order = torch.sort(confidence.double().cpu(), descending=True, stable=True)
    errors = errors.double().cpu()[order.indices]
    _, tie_sizes = torch.unique_consecutive(order.values, return_counts=True)
    tie_ends = torch.cumsum(tie_sizes, 0)
    errors_after_tie = torch.cumsum(errors, 0)[tie_ends - 1]
    errors_in_tie = torch.diff(errors_after_tie, prepend=errors_after_tie.new_zeros(1))
    tie = torch.repeat_interleave(torch.arange(len(tie_sizes)), tie_sizes)
    not_yet_accepted = (tie_ends[tie] - 1 - torch.arange(len(errors))).double()  # of the tie, after this one
    expected_errors = errors_after_tie[tie] - errors_in_tie[tie] * not_yet_accepted / tie_sizes[tie].double()
    return expected_errors / torch.arange(1, len(errors) + 1, dtype=torch.float64)


def aurc(confidence: torch.Tensor, errors: torch.Tensor) -> float:
    """Area under the risk-coverage curve: the mean selective risk over coverages 1/N..N/N (lower is better)."""
    return risk_coverage_curve(confidence, errors).mean().item()


def optimal_aurc(errors: torch.Tensor) -> float:
    """The AURC of a confidence that ranks every correct prediction above every error.

    Exact for N examples; Geifman et al. give its large-N limit r + (1 - r) ln(1 - r) for error rate r.
    """
    n, wrong = errors.shape[0], int(errors.sum().item())
    accepted = torch.arange(n - wrong + 1, n + 1, dtype=torch.float64)  # the only coverages with risk > 0
    return ((accepted - (n - wrong)) / accepted).sum().item() / n


def selective_risk(curve: torch.Tensor, coverage: float) -> float:
    """Risk of a `risk_coverage_curve` at the smallest accepted count whose coverage is >= `coverage`."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    accepted = max(1, math.ceil(round(coverage * curve.shape[0], 9)))
    return curve[accepted - 1].item()


def _coverage_label(coverage: float) -> str:
    return f"{round(coverage * 100):d}"


@metric(
    "selective",
    "Selective classification from the max softmax probability (or 1 - P(abstain) for K+1 logits): AURC, "
    "E-AURC, risk at 100/95/90/80% coverage and a 20-point risk-coverage curve.",
    Column("{split}/aurc", "lower", "fraction"), Column("{split}/eaurc", "lower", "fraction", "detail"),
    *(Column(f"{{split}}/risk_at_cov{_coverage_label(coverage)}", "lower", "fraction", "detail")
      for coverage in COVERAGES),
    *(Column(f"{{split}}/rc_{i:02d}", "lower", "fraction", "detail") for i in range(CURVE_POINTS)),
)  # fmt: skip
def _selective(inputs: EvalInputs, cache: EvalCache) -> dict[str, float]:
    confidence, prediction = confidence_and_prediction(cache.clean_logits(), inputs.num_classes)
    errors = prediction != inputs.labels
    curve = risk_coverage_curve(confidence, errors)
    area = curve.mean().item()
    split = inputs.split
    columns = {f"{split}/aurc": area, f"{split}/eaurc": area - optimal_aurc(errors)}
    for coverage in COVERAGES:
        columns[f"{split}/risk_at_cov{_coverage_label(coverage)}"] = selective_risk(curve, coverage)
    for i in range(CURVE_POINTS):
        columns[f"{split}/rc_{i:02d}"] = selective_risk(curve, (i + 1) / CURVE_POINTS)
    return columns
