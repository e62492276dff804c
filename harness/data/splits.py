"""Seeded, stratified index splits: the tuning split of a train set and capped subsamples.

Stratified so a small validation split or a capped training set keeps every class in its original
proportion; seeded so the same suite seed always yields the same partition on every worker.
"""

from __future__ import annotations

import torch


def _class_members(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """For each class present (ascending), its indices in a seeded random order."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    shuffled = labels[order]
    return [order[shuffled == cls] for cls in torch.unique(labels)]


def _check_labels(labels: torch.Tensor) -> None:
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-d tensor, got shape {tuple(labels.shape)}")


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rest, held_out) index tensors: `round(fraction * n_c)` of every class c goes to held_out.

    Both are sorted, disjoint and together cover `range(len(labels))`.
    """
    _check_labels(labels)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rest, held = [], []
    for members in _class_members(labels.cpu(), seed):
        k = int(fraction * len(members) + 0.5)
        held.append(members[:k])
        rest.append(members[k:])
    empty = torch.empty(0, dtype=torch.int64)
    return torch.cat(rest or [empty]).sort().values, torch.cat(held or [empty]).sort().values


def stratified_subsample(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of `n` samples whose class counts are proportional to those of `labels`.

    Quotas use the largest-remainder rule in integer arithmetic, so they sum to exactly `n` and
    every class is within one sample of its exact share. `n >= len(labels)` returns every index.
    """
    _check_labels(labels)
    if n <= 0:
        raise ValueError(f"subsample size must be positive, got {n}")
    total = len(labels)
    if n >= total:
        return torch.arange(total)
    members = _class_members(labels.cpu(), seed)
    counts = torch.tensor([len(m) for m in members], dtype=torch.int64)
    quotas = n * counts // total
    remainders = n * counts % total
    leftover = n - int(quotas.sum())
    # stable sort: ties go to the lower class id, so the result is a pure function of (labels, n, seed)
    order = torch.sort(remainders, descending=True, stable=True).indices
    quotas[order[:leftover]] += 1
    chosen = [m[: int(q)] for m, q in zip(members, quotas, strict=True)]
    return torch.cat(chosen).sort().values
