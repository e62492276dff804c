"""Calibration scores as pure functions of logits and labels.

Kept free of models, devices and settings so the leaderboard, the tests and post-hoc baselines (e.g.
temperature scaling) can call them on stored logits. Everything is computed in float64 on the
inputs' device; each function returns a Python float.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected logits [N,K] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("calibration scores need at least one example")


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Top-label ECE with `n_bins` equal-width confidence bins (Guo et al. 2017).

    ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|, where bin b holds the examples whose top softmax
    probability lies in (b/n_bins, (b+1)/n_bins]; empty bins contribute nothing.
    """
    _check(logits, labels)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence, prediction = logits.double().softmax(dim=1).max(dim=1)
    correct = (prediction == labels).double()
    inner_edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=logits.device)[1:-1]
    bin_index = torch.bucketize(confidence, inner_edges, right=False)  # (lower, upper] bins
    gap_sum = torch.zeros(n_bins, dtype=torch.float64, device=logits.device)
    gap_sum.index_add_(0, bin_index, correct - confidence)  # per bin: |B|*(acc - conf)
    return float(gap_sum.abs().sum() / labels.shape[0])


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
