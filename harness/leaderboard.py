"""The leaderboard: a pure function from store rows to a ranked table with honest statistics.

Per benchmark, protocol and method: mean/std/95% CI of every metric over seeds, the rank, the paired
difference from a baseline with its CI and probability of improvement, how stable the rank is from
seed to seed, what tuning cost, and the mean corruption error (mCE) against the baseline. The
statistics themselves live in `harness.statistics`; which side of a column is better, and whether a
summary table shows it, is the column's declaration (`harness.columns.column_info`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

import harness.evaluation  # noqa: F401  (registers the built-in metrics, so their columns are declared)
from harness.columns import Column, declare_columns, higher_is_better, is_detail_metric, summary_metrics
from harness.protocols import DEFAULT_PROTOCOL, protocol_sort_key
from harness.statistics import (
    bootstrap_ci,
    paired_t_difference,
    per_seed_ranks,
    probability_of_improvement,
    rank_stability,
    t_interval,
)

__all__ = [
    "BASELINE_COLUMNS", "CORRUPTION_ERROR_METRICS", "FRONT", "RANK_COLUMNS", "TUNING_COLUMNS",
    "bootstrap_ci", "corruption_error_columns", "higher_is_better", "is_detail_metric", "leaderboard",
    "mean_corruption_error", "metric_columns", "phase_rows", "summary_metrics", "tuning_cost",
    "with_protocol",
]

STATISTICS = ("mean", "std", "ci_low", "ci_high")
DEFAULT_PRIMARY = "test/accuracy"
KEYS = ["benchmark", "protocol", "method"]
FRONT = ["benchmark", "protocol", "method", "rank", "n", "n_failed", "primary_metric"]
BASELINE_COLUMNS = (
    "vs_baseline:diff_mean", "vs_baseline:diff_ci_low", "vs_baseline:diff_ci_high",
    "vs_baseline:p_improve", "vs_baseline:n_pairs",
)
RANK_COLUMNS = ("rank:per_seed_mean", "rank:per_seed_std", "rank:stability")
TUNING_COLUMNS = ("tuning:trials", "tuning:failed", "tuning:wall_s", "tuning:samples_seen", "tuning:flops")
# Derived from every method's seed means against the baseline's: one value per method, no spread over seeds.
CORRUPTION_ERROR_METRICS = ("mce", "relative_mce")
SEVERITY_COLUMN = re.compile(r"^(?P<split>[^/]+)/c_(?P<family>[a-z0-9_]+)_s(?P<severity>[0-9]+)_accuracy$")
declare_columns("leaderboard", [  # derived here, from the seed means of the corruption accuracies
    Column("{split}/mce", "lower", "ratio"), Column("{split}/relative_mce", "lower", "ratio"),
])


def with_protocol(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with a `protocol` on every row: a missing column or value means the held-out protocol."""
    if "protocol" not in rows:
        return rows.assign(protocol=DEFAULT_PROTOCOL)
    return rows.assign(protocol=rows["protocol"].fillna(DEFAULT_PROTOCOL).astype(str))


def metric_columns(rows: pd.DataFrame) -> list[str]:
    """Numeric `group/name` columns with at least one value, excluding cost bookkeeping."""
    return [
        c for c in rows.columns
        if "/" in c and not c.startswith("cost/") and pd.api.types.is_numeric_dtype(rows[c]) and rows[c].notna().any()
    ]


def summarise(values: pd.Series) -> dict[str, float]:
    """Mean, std and the 95% Student-t interval (`T_INTERVAL`) of the successful runs' values."""
    data = values.dropna().astype(float)
    low, high, _ = t_interval(data.to_numpy())
    return {
        "mean": float(data.mean()) if len(data) else float("nan"),
        "std": float(data.std(ddof=1)) if len(data) > 1 else float("nan"),
        "ci_low": low,
        "ci_high": high,
    }


def primary_for(primary: str | Mapping[str, str], benchmark: str) -> str:
    return primary if isinstance(primary, str) else primary.get(benchmark, DEFAULT_PRIMARY)


def phase_rows(rows: pd.DataFrame, phase: str) -> pd.DataFrame:
    """The rows of one phase, with a protocol each (no rows at all when the store has no phase column)."""
    chosen = rows[rows["phase"] == phase] if "phase" in rows else rows.iloc[0:0]
    return with_protocol(chosen)


def seed_scores(ok: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A seed x method table of `metric` from successful final rows (duplicates of a seed averaged).

    Rows that record their tuning study (`tuning.repeats`) are indexed by (study, seed): each study's
    config retrained with each seed is its own run, so pairs and ranks are per (study, seed), and n is
    seeds x studies. Rows made before studies existed are indexed by seed, as they always were."""
    if metric not in ok or "seed" not in ok or ok.empty:
        return pd.DataFrame()
    if "study" in ok and ok["study"].notna().any():
        ok = ok.assign(study=ok["study"].fillna(0).astype(int))
        return ok.pivot_table(index=["study", "seed"], columns="method", values=metric, aggfunc="mean")
    return ok.pivot_table(index="seed", columns="method", values=metric, aggfunc="mean")


def seeds_and_studies(pairs: Iterable[Hashable]) -> tuple[int, int]:
    """How many distinct seeds and studies a set of `seed_scores` index keys spans: (seeds, 1) for keys
    that are seeds, (seeds, studies) for (study, seed) keys."""
    keys = list(pairs)
    if not keys or not isinstance(keys[0], tuple):
        return len(set(keys)), 1
    return len({seed for _, seed in keys}), len({study for study, _ in keys})


# ---------------------------------------------------------------- the table


def leaderboard(
    rows: pd.DataFrame,
    *,
    primary: str | Mapping[str, str] = DEFAULT_PRIMARY,
    metrics: Sequence[str] | None = None,
    baseline: str | None = "erm",
) -> pd.DataFrame:
    """Per benchmark, protocol and method: counts, statistics of each metric, rank and comparisons.

    `rows` are store rows: `phase == "final"` rows give the statistics, `phase == "tune"` rows the
    tuning cost. Columns are FRONT, `"<metric>:<statistic>"` for each statistic in STATISTICS, then
    BASELINE_COLUMNS (paired against `baseline` on the primary metric, NaN for the baseline itself
    or when it has no runs), RANK_COLUMNS and TUNING_COLUMNS. Ranks are within (benchmark,
    protocol); rank 1 is best; a method with no successful run gets no rank.
    """
    final = phase_rows(rows, "final")
    chosen = list(metrics) if metrics is not None else metric_columns(final)
    if final.empty:
        return pd.DataFrame(columns=FRONT)
    table = pd.DataFrame.from_records([
        summary_record(keys, group, primary_for(primary, keys[0]), chosen)
        for keys, group in final.groupby(KEYS, sort=True)
    ])
    if table.empty:  # every row lacked a benchmark or method
        return pd.DataFrame(columns=FRONT)
    table = table.join(corruption_error_columns(table, chosen, baseline))
    table["rank"] = np.nan
    extras = []
    for (benchmark, protocol), group in table.groupby(["benchmark", "protocol"], sort=False):
        metric = group["primary_metric"].iloc[0]
        if f"{metric}:mean" in group:
            ranks = group[f"{metric}:mean"].rank(ascending=not higher_is_better(metric), method="min")
            table.loc[group.index, "rank"] = ranks
        ok = final[(final["benchmark"] == benchmark) & (final["protocol"] == protocol) & (final["status"] == "ok")]
        scores = seed_scores(ok, metric)
        overall = dict(zip(group["method"], table.loc[group.index, "rank"], strict=True))
        extras.append(seed_comparisons(group, scores, overall, metric, baseline))
    table = table.join(pd.concat(extras))
    table = table.merge(tuning_cost(rows), on=KEYS, how="left")
    table["tuning:trials"] = table["tuning:trials"].fillna(0).astype(int)
    table["tuning:failed"] = table["tuning:failed"].fillna(0).astype(int)
    order = {p: i for i, p in enumerate(sorted(table["protocol"].unique(), key=protocol_sort_key))}
    table = (table.assign(_protocol_order=table["protocol"].map(order))
             .sort_values(["benchmark", "_protocol_order", "rank", "method"], na_position="last")
             .drop(columns="_protocol_order").reset_index(drop=True))
    return table[FRONT + [c for c in table.columns if c not in FRONT]]


def summary_record(
    keys: tuple, group: pd.DataFrame, primary: str, metrics: Sequence[str]
) -> dict[str, object]:
    """Counts and mean/std/CI of every metric for one benchmark x protocol x method."""
    benchmark, protocol, method = keys
    ok = group[group["status"] == "ok"]
    record: dict[str, object] = {
        "benchmark": benchmark, "protocol": protocol, "method": method, "n": len(ok),
        "n_failed": len(group) - len(ok), "primary_metric": primary,
    }
    for metric in metrics:
        stats = summarise(ok[metric]) if metric in ok else {}
        for stat in STATISTICS:
            record[f"{metric}:{stat}"] = stats.get(stat, float("nan"))
    return record


def seed_comparisons(
    group: pd.DataFrame, scores: pd.DataFrame, overall: Mapping[Hashable, float], metric: str,
    baseline: str | None,
) -> pd.DataFrame:
    """BASELINE_COLUMNS and RANK_COLUMNS for the methods of one benchmark x protocol (index as `group`)."""
    up = higher_is_better(metric)
    stability = rank_stability(per_seed_ranks(scores, higher_is_better=up), overall) if len(scores) else None
    has_baseline = baseline is not None and baseline in scores and scores[baseline].notna().any()
    base = scores[baseline].dropna().to_dict() if has_baseline else {}
    out = pd.DataFrame(np.nan, index=group.index, columns=[*BASELINE_COLUMNS, *RANK_COLUMNS])
    for index, method in zip(group.index, group["method"], strict=True):
        own = scores[method].dropna().to_dict() if method in scores else {}
        if has_baseline and method != baseline:
            diff = paired_t_difference(own, base)
            p_improve = probability_of_improvement(list(own.values()), list(base.values()), higher_is_better=up)
            out.loc[index, list(BASELINE_COLUMNS)] = [diff.mean, *diff.interval[:2], p_improve, diff.n_pairs]
        if stability is not None and method in stability.index:
            out.loc[index, list(RANK_COLUMNS)] = stability.loc[method, ["mean", "std", "stability"]].to_list()
    return out


def tuning_cost(rows: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark, protocol and method: tuning trials, failures, and summed wall time, samples, FLOPs.

    Equal budgets are only equal if someone checks: these columns let a reader see what each
    method's tuning actually consumed. A sum is NaN when no trial recorded that quantity.
    """
    tune = phase_rows(rows, "tune")
    records = []
    for (benchmark, protocol, method), group in tune.groupby(KEYS, sort=True) if len(tune) else ():
        records.append({
            "benchmark": benchmark, "protocol": protocol, "method": method,
            "tuning:trials": len(group),
            "tuning:failed": int((group["status"] != "ok").sum()) if "status" in group else 0,
            **{f"tuning:{name}": summed(group, column) for name, column in
               (("wall_s", "wall_s"), ("samples_seen", "train/samples_seen"), ("flops", "train/flops"))},
        })
    return pd.DataFrame.from_records(records, columns=[*KEYS, *TUNING_COLUMNS])


def summed(group: pd.DataFrame, column: str) -> float:
    if column not in group:
        return float("nan")
    return float(pd.to_numeric(group[column], errors="coerce").sum(min_count=1))


# ---------------------------------------------------------------- mean corruption error


def mean_corruption_error(
    errors: Mapping[str, Mapping[int, float]], baseline_errors: Mapping[str, Mapping[int, float]], *,
    clean_error: float = 0.0, baseline_clean_error: float = 0.0,
) -> float:
    """mCE of Hendrycks & Dietterich (2019): per family, the summed corruption error over severities
    divided by the baseline's, averaged over families (1.0 is the baseline itself; lower is better).

    `errors[family][severity]` are error rates (1 - accuracy). Only the (family, severity) pairs the
    baseline has count; a method missing any of them is not comparable and gets NaN. With clean errors
    this is the relative mCE: every term first loses the model's own clean error. A family whose
    baseline denominator is not positive (the corruption does not hurt the baseline) has no ratio and
    is left out for every method alike; NaN when no family is left.
    """
    ratios = []
    for family, base in baseline_errors.items():
        severities = [k for k, value in base.items() if math.isfinite(value)]
        own = [errors.get(family, {}).get(k, math.nan) for k in severities]
        if not all(math.isfinite(value) for value in own):
            return math.nan
        denominator = sum(base[k] - baseline_clean_error for k in severities)
        if severities and denominator > 0:
            ratios.append(sum(value - clean_error for value in own) / denominator)
    return float(np.mean(ratios)) if ratios else math.nan


def corruption_grid(metrics: Sequence[str]) -> dict[str, dict[str, dict[int, str]]]:
    """split -> family -> severity -> the `{split}/c_{family}_s{k}_accuracy` column among `metrics`."""
    grid: dict[str, dict[str, dict[int, str]]] = {}
    for metric in metrics:
        match = SEVERITY_COLUMN.match(metric)
        if match:
            family = grid.setdefault(match["split"], {}).setdefault(match["family"], {})
            family[int(match["severity"])] = metric
    return grid


def seed_mean_errors(
    record: Mapping[str, object], families: Mapping[str, Mapping[int, str]]
) -> dict[str, dict[int, float]]:
    """family -> severity -> 1 - the seed-mean accuracy of one leaderboard record."""
    return {family: {k: 1.0 - float(record[f"{column}:mean"]) for k, column in columns.items()}
            for family, columns in families.items()}


def corruption_error_columns(table: pd.DataFrame, metrics: Sequence[str], baseline: str | None) -> pd.DataFrame:
    """`{split}/mce` and `{split}/relative_mce` statistic columns (index as `table`) from the seed means.

    Computed per benchmark x protocol from each method's mean accuracy per family and severity against
    the baseline's (so `:mean` only; std and CI are NaN); NaN without the baseline. The relative mCE
    uses `{split}/corruption_clean_accuracy_subset`, the clean accuracy on the corrupted examples.
    """
    out = pd.DataFrame(index=table.index)
    for split, families in corruption_grid(metrics).items():
        columns = [f"{split}/{name}:{stat}" for name in CORRUPTION_ERROR_METRICS for stat in STATISTICS]
        out = out.join(pd.DataFrame(np.nan, index=table.index, columns=columns))
        clean = f"{split}/corruption_clean_accuracy_subset:mean"
        for _, group in table.groupby(["benchmark", "protocol"], sort=False):
            base = group[group["method"] == baseline]
            if base.empty:
                continue
            base_record = base.iloc[0]
            base_errors = seed_mean_errors(base_record, families)
            base_clean = 1.0 - float(base_record[clean]) if clean in table else math.nan
            for index, record in group.iterrows():
                errors = seed_mean_errors(record, families)
                out.loc[index, f"{split}/mce:mean"] = mean_corruption_error(errors, base_errors)
                own_clean = 1.0 - float(record[clean]) if clean in table else math.nan
                out.loc[index, f"{split}/relative_mce:mean"] = (
                    mean_corruption_error(errors, base_errors, clean_error=own_clean, baseline_clean_error=base_clean)
                    if math.isfinite(own_clean) and math.isfinite(base_clean) else math.nan)
    return out
