"""The leaderboard: a pure function from final-run rows to a ranked table with honest statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

LOWER_IS_BETTER_MARKERS = ("nll", "ece", "brier", "latency", "flops", "params", "wall_s", "error", "loss")
STATISTICS = ("mean", "std", "ci_low", "ci_high")


def higher_is_better(metric: str) -> bool:
    """Direction of a metric, from its name (`test/accuracy` up, `test/ece` down)."""
    return not any(marker in metric for marker in LOWER_IS_BETTER_MARKERS)


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean (degenerate for n <= 1)."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if len(data) == 0:
        return (float("nan"), float("nan"))
    if len(data) == 1:
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(n_boot, len(data)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def metric_columns(rows: pd.DataFrame) -> list[str]:
    """Numeric `group/name` columns with at least one value, excluding cost bookkeeping."""
    return [
        c for c in rows.columns
        if "/" in c and not c.startswith("cost/") and pd.api.types.is_numeric_dtype(rows[c]) and rows[c].notna().any()
    ]


def summarise(values: pd.Series, *, n_boot: int, seed: int) -> dict[str, float]:
    data = values.dropna().astype(float)
    low, high = bootstrap_ci(data.to_numpy(), n_boot=n_boot, seed=seed)
    return {
        "mean": float(data.mean()) if len(data) else float("nan"),
        "std": float(data.std(ddof=1)) if len(data) > 1 else float("nan"),
        "ci_low": low,
        "ci_high": high,
    }


def leaderboard(
    rows: pd.DataFrame,
    *,
    primary: str | Mapping[str, str] = "test/accuracy",
    metrics: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per benchmark and method: n, failures, and mean/std/95% CI of each metric, ranked by `primary`.

    `rows` are store rows; only `phase == "final"` rows count. Columns of the result are
    `benchmark, method, rank, n, n_failed, primary_metric` and `"<metric>:<statistic>"` for each
    statistic in STATISTICS. Rank 1 is best; a method with no successful run gets no rank.
    """
    final = rows[rows["phase"] == "final"] if "phase" in rows else rows.iloc[0:0]
    chosen = list(metrics) if metrics is not None else metric_columns(final)
    records = []
    groups = final.groupby(["benchmark", "method"], sort=True) if len(final) else ()  # no rows, maybe no columns
    for (benchmark, method), group in groups:
        ok = group[group["status"] == "ok"]
        record: dict[str, object] = {
            "benchmark": benchmark, "method": method, "n": len(ok), "n_failed": len(group) - len(ok),
            "primary_metric": primary if isinstance(primary, str) else primary.get(benchmark, "test/accuracy"),
        }
        for metric in chosen:
            stats = summarise(ok[metric], n_boot=n_boot, seed=seed) if metric in ok else {}
            for stat in STATISTICS:
                record[f"{metric}:{stat}"] = stats.get(stat, float("nan"))
        records.append(record)
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return pd.DataFrame(columns=["benchmark", "method", "rank", "n", "n_failed", "primary_metric"])
    table["rank"] = np.nan
    for _, group in table.groupby("benchmark"):
        metric = group["primary_metric"].iloc[0]
        column = f"{metric}:mean"
        if column not in group:
            continue
        ranks = group[column].rank(ascending=not higher_is_better(metric), method="min")
        table.loc[group.index, "rank"] = ranks
    table = table.sort_values(["benchmark", "rank", "method"], na_position="last").reset_index(drop=True)
    front = ["benchmark", "method", "rank", "n", "n_failed", "primary_metric"]
    return table[front + [c for c in table.columns if c not in front]]
