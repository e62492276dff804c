"""Paired comparisons of methods on every metric: what a method moves, against which method, and how surely.

Beside the leaderboard (which compares every method with one baseline on the primary metric only) and
like it a pure function of store rows: the site's method pages list every metric of a method against its
baseline, its side effects (the metrics other than the claim's that it moves beyond their interval), and
the compare view every pair of methods. Each difference is paired by seed with a 95% Student-t interval
(`harness.statistics.paired_t_difference`); a difference whose interval excludes zero gets a direction
read from the column's declaration (`harness.columns`), so "better" means better for that metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations
from typing import Literal

import pandas as pd

from harness.columns import column_info, higher_is_better
from harness.statistics import T_INTERVAL, paired_t_difference

Direction = Literal["better", "worse", ""]


@dataclass(frozen=True)
class MetricDifference:
    """`method - baseline` on one metric, paired by seed: means, difference, its interval and direction."""

    metric: str
    method: str
    baseline: str
    method_mean: float
    baseline_mean: float
    difference: float
    ci: tuple[float, float]
    n_pairs: int
    direction: Direction  # "" when the interval includes zero (or there is none)
    interval_method: str = T_INTERVAL


def direction_of(metric: str, low: float, high: float) -> Direction:
    """Better or worse for `metric` when the interval [low, high] excludes zero; "" otherwise."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return ""
    if low > 0 or high < 0:
        return "better" if (low > 0) == higher_is_better(metric) else "worse"
    return ""


def successful_final(rows: pd.DataFrame) -> pd.DataFrame:
    """The successful final rows (an empty frame when the store has no phase or status)."""
    if "phase" not in rows or "status" not in rows:
        return rows.iloc[0:0]
    return rows[(rows["phase"] == "final") & (rows["status"] == "ok")]


def seed_tables(final: pd.DataFrame, metrics: Sequence[str]) -> dict[str, pd.DataFrame]:
    """metric -> its seed x method table of means (as `harness.leaderboard.seed_scores` builds it), all
    metrics in one pass."""
    present = [metric for metric in metrics if metric in final]
    if not present or "seed" not in final or final.empty:
        return {}
    means = final.groupby(["seed", "method"])[present].mean()
    return {metric: means[metric].unstack("method") for metric in present}


def differences_from(tables: dict[str, pd.DataFrame], method: str, baseline: str) -> list[MetricDifference]:
    """`method` against `baseline` on each metric of `tables`; a metric either side never measured is left out."""
    out = []
    for metric, scores in tables.items():
        if method not in scores or baseline not in scores:
            continue
        own, base = scores[method].dropna(), scores[baseline].dropna()
        if own.empty or base.empty:
            continue
        diff = paired_t_difference(own.to_dict(), base.to_dict())
        low, high = float(diff.interval[0]), float(diff.interval[1])
        out.append(MetricDifference(
            metric=metric, method=method, baseline=baseline, method_mean=float(own.mean()),
            baseline_mean=float(base.mean()), difference=float(diff.mean), ci=(low, high), n_pairs=diff.n_pairs,
            direction=direction_of(metric, low, high),
        ))
    return out


def metric_differences(
    final: pd.DataFrame, method: str, baseline: str, metrics: Sequence[str]
) -> list[MetricDifference]:
    """`method` against `baseline` on each of `metrics`, from the successful final rows of one benchmark
    and protocol; a metric either side never measured is left out."""
    return differences_from(seed_tables(final, metrics), method, baseline)


def side_effects(differences: Sequence[MetricDifference], target: str) -> list[MetricDifference]:
    """The measured metrics other than `target` (the claim's) that the method moves beyond their interval;
    the jobs' own bookkeeping (steps, losses, wall times: columns `harness` declares) is no side effect."""
    return [difference for difference in differences if difference.metric != target and difference.direction
            and column_info(difference.metric).owner != "harness"]


def pairwise_differences(tables: dict[str, pd.DataFrame], methods: Sequence[str]) -> list[MetricDifference]:
    """Every ordered pair of `methods` on every metric of `tables` (one benchmark and protocol's `seed_tables`)."""
    return [difference for method, other in permutations(methods, 2)
            for difference in differences_from(tables, method, other)]
