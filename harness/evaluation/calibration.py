"""Calibration scores as pure functions of logits and labels.

Kept free of models, devices and settings so the leaderboard, the tests and post-hoc baselines (e.g.
temperature scaling) can call them on stored logits. Everything is computed in float64 on the
inputs' device; each score is a Python float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field

from harness.schema import Strict


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected logits [N,K] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("calibration scores need at least one example")


def _confidence_bins(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per equal-width bin (lower, upper] of top-label confidence: (count, sum of confidence, sum of correct)."""
    _check(logits, labels)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence, prediction = logits.double().softmax(dim=1).max(dim=1)
    correct = (prediction == labels).double()
    inner_edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=logits.device)[1:-1]
    bin_index = torch.bucketize(confidence, inner_edges, right=False)  # (lower, upper] bins
    sums = torch.zeros(3, n_bins, dtype=torch.float64, device=logits.device)
    for row, values in enumerate((torch.ones_like(confidence), confidence, correct)):
        sums[row].index_add_(0, bin_index, values)
    return sums[0], sums[1], sums[2]


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Top-label ECE with `n_bins` equal-width confidence bins (Guo et al. 2017).

    ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|, where bin b holds the examples whose top softmax
    probability lies in (b/n_bins, (b+1)/n_bins]; empty bins contribute nothing. Equals torchmetrics'
    `MulticlassCalibrationError(norm="l1")` except for confidences exactly on a bin edge: torchmetrics
    bins [lower, upper) and gives a confidence of exactly 1.0 a bin of its own.
    """
    count, confidence_sum, correct_sum = _confidence_bins(logits, labels, n_bins)
    return float((correct_sum - confidence_sum).abs().sum() / count.sum())  # per bin: |B|*|acc - conf|


@dataclass(frozen=True)
class ReliabilityBins:
    """A reliability diagram's data: per confidence bin, mean confidence, accuracy and example count.

    Float64 tensors of length n_bins; confidence and accuracy are NaN in empty bins, so an average
    over seeds skips them instead of pulling the bar towards zero.
    """

    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor


def reliability_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> ReliabilityBins:
    """The bins `expected_calibration_error` uses, for plotting accuracy against confidence."""
    count, confidence_sum, correct_sum = _confidence_bins(logits, labels, n_bins)
    occupied = count.clamp(min=1.0)
    empty = count == 0
    return ReliabilityBins(
        confidence=(confidence_sum / occupied).masked_fill(empty, math.nan),
        accuracy=(correct_sum / occupied).masked_fill(empty, math.nan),
        count=count,
    )


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy of the true labels, in nats."""
    _check(logits, labels)
    return float(F.cross_entropy(logits.double(), labels, reduction="mean"))


def brier_score(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-class Brier score (Brier 1950): mean over examples of sum_k (p_k - onehot_k)^2, in [0, 2]."""
    _check(logits, labels)
    probabilities = logits.double().softmax(dim=1)
    onehot = F.one_hot(labels, num_classes=logits.shape[1]).double()
    return float((probabilities - onehot).pow(2).sum(dim=1).mean())


# Temperatures outside this range mean the validation data are (nearly) separable or the logits are
# constant; the NLL is then flat there, and the clamp keeps the fitted value finite and reportable.
_MIN_TEMPERATURE, _MAX_TEMPERATURE = 1e-2, 1e2


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The scalar T > 0 minimising the NLL of softmax(logits / T) (temperature scaling, Guo et al. 2017).

    Fit on held-out validation logits, never on the data it is evaluated on. L-BFGS on log T (so T
    stays positive) from T = 1, in float64 on CPU, which makes it deterministic. The result never
    has a higher NLL on `logits` than T = 1 and is clamped to [0.01, 100].
    """
    _check(logits, labels)
    logits = logits.detach().double().cpu()
    labels = labels.detach().cpu()
    if not torch.isfinite(logits).all():
        raise ValueError("fit_temperature needs finite logits; the model produced inf or NaN")
    true_logit = logits.gather(1, labels[:, None])[:, 0]
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)  # u = log T
    optimizer = torch.optim.LBFGS(
        [log_temperature], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        # NLL(u) = mean(logsumexp(z e^-u) - z_y e^-u) and its derivative in closed form: autograd
        # would cost more than the whole N x K computation here.
        with torch.no_grad():
            scale = torch.exp(-log_temperature)
            scaled = logits * scale
            loss = (torch.logsumexp(scaled, dim=1) - true_logit * scale).mean()
            expected_logit = (scaled.softmax(dim=1) * logits).sum(dim=1)
            log_temperature.grad = -scale * (expected_logit - true_logit).mean()
        return loss

    optimizer.step(closure)
    fitted = log_temperature.item()
    if math.isnan(fitted):
        return 1.0
    temperature = math.exp(min(max(fitted, math.log(_MIN_TEMPERATURE)), math.log(_MAX_TEMPERATURE)))
    if negative_log_likelihood(logits / temperature, labels) > negative_log_likelihood(logits, labels):
        return 1.0  # a failed line search must not make the model worse than leaving it alone
    return temperature


class CalibrationSettings(Strict):
    """The calibration family's part of `EvaluationSettings`: `ece`, `temperature_scaling` and the split it fits on."""


    ece_bins: int = Field(
        15, ge=1, description="Equal-width confidence bins of the expected calibration error."
    )
    calibration_size: int = Field(
        0, ge=0, description="Training examples held out of every final run (stratified, the same for every "
        "method) to fit temperature scaling on; 0 trains on the whole split and leaves the *_ts columns NaN.",
    )
