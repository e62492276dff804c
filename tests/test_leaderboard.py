"""The leaderboard as a pure function: statistics, bootstrap intervals, ranking direction and failures,
checked against hand-computed answers on a small fixture."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.leaderboard import bootstrap_ci, higher_is_better, leaderboard

A_ACCURACY = [0.90, 0.92, 0.94]
B_ACCURACY = [0.80, 0.82]
A_ECE = [0.05, 0.03, 0.04]
B_ECE = [0.02, 0.01]


def row(benchmark: str, method: str, seed: int, *, phase: str = "final", status: str = "ok",
        **metrics: float) -> dict[str, object]:
    return {"row_id": f"{phase}:{benchmark}:{method}:s{seed}", "phase": phase, "benchmark": benchmark,
            "method": method, "seed": seed, "status": status, "error": None if status == "ok" else "boom",
            **{name.replace("__", "/"): value for name, value in metrics.items()}}


@pytest.fixture
def rows() -> pd.DataFrame:
    """digits: A (3 seeds) beats B (2 ok, 1 failed); C only failed. Tuning/teacher rows that would win if counted."""
    records = [
        row("digits", "A", seed, test__accuracy=acc, test__ece=ece, cost__wall_s=10.0 + seed)
        for seed, (acc, ece) in enumerate(zip(A_ACCURACY, A_ECE, strict=True))
    ]
    records += [
        row("digits", "B", seed, test__accuracy=acc, test__ece=ece, cost__wall_s=20.0)
        for seed, (acc, ece) in enumerate(zip(B_ACCURACY, B_ECE, strict=True))
    ]
    records += [
        row("digits", "B", 2, status="error"),
        row("digits", "C", 0, status="error"),
        row("digits", "C", 1, status="error"),
        row("digits", "C", 0, phase="tune", test__accuracy=0.99, test__ece=0.001, val__accuracy=0.99),
        row("digits", "B", 7, phase="tune", test__accuracy=0.99, test__ece=0.001, val__accuracy=0.99),
        row("digits", "teacher:small_cnn", 0, phase="teacher", test__accuracy=0.999),
    ]
    return pd.DataFrame.from_records(records)


def line(table: pd.DataFrame, benchmark: str, method: str) -> pd.Series:
    match = table[(table["benchmark"] == benchmark) & (table["method"] == method)]
    assert len(match) == 1
    return match.iloc[0]


# ---------------------------------------------------------------- statistics


def test_mean_std_and_counts(rows: pd.DataFrame) -> None:
    table = leaderboard(rows)

    a, b, c = (line(table, "digits", m) for m in "ABC")
    assert a["test/accuracy:mean"] == pytest.approx(0.92)
    assert a["test/accuracy:std"] == pytest.approx(0.02)  # ddof=1
    assert (a["n"], a["n_failed"]) == (3, 0)
    assert b["test/accuracy:mean"] == pytest.approx(0.81)
    assert b["test/accuracy:std"] == pytest.approx(math.sqrt(2 * 0.01**2))
    assert b["test/ece:mean"] == pytest.approx(0.015)
    assert (b["n"], b["n_failed"]) == (2, 1)
    assert (c["n"], c["n_failed"]) == (0, 2)
    assert math.isnan(c["test/accuracy:mean"]) and math.isnan(c["test/accuracy:ci_low"])


def test_only_final_rows_count(rows: pd.DataFrame) -> None:
    table = leaderboard(rows)
    assert set(table["method"]) == {"A", "B", "C"}  # no teacher row
    assert "val/accuracy:mean" not in table.columns  # a column only tuning rows have
    b = line(table, "digits", "B")
    assert b["test/accuracy:mean"] == pytest.approx(0.81)  # the 0.99 tuning trial is ignored
    assert math.isnan(line(table, "digits", "C")["rank"])


def test_table_columns(rows: pd.DataFrame) -> None:
    table = leaderboard(rows)
    assert list(table.columns[:6]) == ["benchmark", "method", "rank", "n", "n_failed", "primary_metric"]
    assert {f"test/accuracy:{s}" for s in ("mean", "std", "ci_low", "ci_high")} <= set(table.columns)
    assert not any(column.startswith("cost/") for column in table.columns)
    assert not any(column.startswith(("seed", "row_id")) for column in table.columns[6:])
    only = leaderboard(rows, metrics=["test/ece"])
    assert list(only.columns[6:]) == ["test/ece:mean", "test/ece:std", "test/ece:ci_low", "test/ece:ci_high"]


def test_std_is_nan_for_a_single_run() -> None:
    table = leaderboard(pd.DataFrame.from_records([row("digits", "A", 0, test__accuracy=0.9)]))
    a = line(table, "digits", "A")
    assert a["test/accuracy:mean"] == 0.9
    assert math.isnan(a["test/accuracy:std"])
    assert (a["test/accuracy:ci_low"], a["test/accuracy:ci_high"]) == (0.9, 0.9)
    assert a["rank"] == 1


def test_empty_and_phaseless_inputs_give_an_empty_table() -> None:
    for frame in (pd.DataFrame({"row_id": pd.Series([], dtype=str)}),
                  pd.DataFrame.from_records([row("digits", "A", 0, phase="tune", test__accuracy=0.9)])):
        table = leaderboard(frame)
        assert len(table) == 0
        assert list(table.columns) == ["benchmark", "method", "rank", "n", "n_failed", "primary_metric"]


# ---------------------------------------------------------------- bootstrap


def reference_bootstrap(
    values: list[float], *, n_boot: int, seed: int, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap of the mean, written out independently."""
    data = np.array(values, dtype=float)
    rng = np.random.default_rng(seed)
    resampled = np.empty(n_boot)
    draws = rng.integers(0, len(data), size=(n_boot, len(data)))
    for i in range(n_boot):
        resampled[i] = data[draws[i]].sum() / len(data)
    tail = (1 - confidence) / 2
    return np.quantile(resampled, [tail, 1 - tail]), resampled


@pytest.mark.parametrize("seed", [0, 1, 12345])
@pytest.mark.parametrize("values", [A_ACCURACY, B_ACCURACY, [0.1, 0.5, 0.2, 0.9, 0.7]], ids=["A", "B", "five"])
def test_bootstrap_ci_matches_a_direct_numpy_bootstrap(values: list[float], seed: int) -> None:
    expected, resampled = reference_bootstrap(values, n_boot=2000, seed=seed)

    low, high = bootstrap_ci(values, n_boot=2000, seed=seed)

    assert (low, high) == (pytest.approx(expected[0], abs=1e-15), pytest.approx(expected[1], abs=1e-15))
    assert (low, high) == (pytest.approx(np.percentile(resampled, 2.5), abs=1e-12),
                           pytest.approx(np.percentile(resampled, 97.5), abs=1e-12))


def test_bootstrap_ci_is_exactly_the_numpy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(7)
    data = np.array(A_ACCURACY)
    means = data[rng.integers(0, 3, size=(500, 3))].mean(axis=1)
    alpha = (1.0 - 0.9) / 2.0
    expected = tuple(float(q) for q in np.quantile(means, [alpha, 1.0 - alpha]))
    assert bootstrap_ci(A_ACCURACY, confidence=0.9, n_boot=500, seed=7) == expected


@pytest.mark.parametrize("values", [A_ACCURACY, B_ACCURACY, A_ECE], ids=["A", "B", "A-ece"])
def test_bootstrap_ci_brackets_the_mean_within_the_data(values: list[float]) -> None:
    low, high = bootstrap_ci(values, seed=0)
    tolerance = 1e-12  # a resampled mean of equal values may be one ulp off them
    assert min(values) - tolerance <= low <= np.mean(values) <= high <= max(values) + tolerance
    assert low < high
    assert bootstrap_ci(values, seed=0) == (low, high)  # deterministic for a seed


def test_bootstrap_ci_depends_on_seed_and_confidence() -> None:
    values = [0.1, 0.5, 0.2, 0.9, 0.7]
    first = bootstrap_ci(values, seed=0)
    assert bootstrap_ci(values, seed=0) == first
    assert bootstrap_ci(values, seed=1) != first
    narrow = bootstrap_ci(values, confidence=0.5, seed=0)
    assert first[0] < narrow[0] < narrow[1] < first[1]


def test_bootstrap_ci_degenerate_cases() -> None:
    assert bootstrap_ci([0.9]) == (0.9, 0.9)
    assert bootstrap_ci([0.9, float("nan")]) == (0.9, 0.9)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan"), float("inf")]))
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert bootstrap_ci([0.9, float("nan"), 0.92], seed=4) == bootstrap_ci([0.9, 0.92], seed=4)


def test_leaderboard_ci_is_the_bootstrap_of_the_successful_runs(rows: pd.DataFrame) -> None:
    table = leaderboard(rows, n_boot=500, seed=3)
    a, b = line(table, "digits", "A"), line(table, "digits", "B")
    assert (a["test/accuracy:ci_low"], a["test/accuracy:ci_high"]) == bootstrap_ci(A_ACCURACY, n_boot=500, seed=3)
    assert (b["test/ece:ci_low"], b["test/ece:ci_high"]) == bootstrap_ci(B_ECE, n_boot=500, seed=3)
    assert a["test/accuracy:ci_low"] <= a["test/accuracy:mean"] <= a["test/accuracy:ci_high"]


# ---------------------------------------------------------------- ranking


def test_higher_accuracy_ranks_first_and_failures_sort_last(rows: pd.DataFrame) -> None:
    table = leaderboard(rows)
    assert table["method"].tolist() == ["A", "B", "C"]
    assert table["rank"].tolist()[:2] == [1.0, 2.0]
    assert math.isnan(table["rank"].iloc[2])
    assert set(table["primary_metric"]) == {"test/accuracy"}


def test_lower_ece_ranks_first(rows: pd.DataFrame) -> None:
    table = leaderboard(rows, primary="test/ece")
    assert table["method"].tolist() == ["B", "A", "C"]
    assert line(table, "digits", "B")["rank"] == 1
    assert line(table, "digits", "A")["rank"] == 2
    assert math.isnan(line(table, "digits", "C")["rank"])


def test_per_benchmark_primary_metric(rows: pd.DataFrame) -> None:
    other = rows.replace({"benchmark": {"digits": "fashion"}})
    other["row_id"] = other["row_id"].str.replace("digits", "fashion")
    both = pd.concat([rows, other], ignore_index=True)

    table = leaderboard(both, primary={"digits": "test/accuracy", "fashion": "test/ece"})

    assert table["benchmark"].tolist() == ["digits"] * 3 + ["fashion"] * 3
    assert table[table["benchmark"] == "digits"]["method"].tolist() == ["A", "B", "C"]
    assert table[table["benchmark"] == "fashion"]["method"].tolist() == ["B", "A", "C"]
    assert set(table[table["benchmark"] == "fashion"]["primary_metric"]) == {"test/ece"}
    unmapped = leaderboard(both, primary={"fashion": "test/ece"})
    assert set(unmapped[unmapped["benchmark"] == "digits"]["primary_metric"]) == {"test/accuracy"}
    assert unmapped[unmapped["benchmark"] == "digits"]["method"].tolist() == ["A", "B", "C"]


def test_ties_share_the_best_rank() -> None:
    frame = pd.DataFrame.from_records([
        row("digits", "x", 0, test__accuracy=0.9), row("digits", "y", 0, test__accuracy=0.9),
        row("digits", "z", 0, test__accuracy=0.8),
    ])
    table = leaderboard(frame)
    assert table["method"].tolist() == ["x", "y", "z"]
    assert table["rank"].tolist() == [1.0, 1.0, 3.0]


def test_missing_primary_metric_leaves_methods_unranked(rows: pd.DataFrame) -> None:
    table = leaderboard(rows, primary="test/brier")
    assert table["rank"].isna().all()
    assert table["method"].tolist() == ["A", "B", "C"]


@pytest.mark.parametrize(("metric", "higher"), [
    ("test/accuracy", True),
    ("val/accuracy", True),
    ("test/pgd_linf_accuracy", True),
    ("test/gaussian_noise_accuracy", True),
    ("throughput/images_per_s", True),
    ("test/nll", False),
    ("test/ece", False),
    ("test/brier", False),
    ("latency/cpu_b1_median_ms", False),
    ("model/fwd_flops_2xmac_per_image", False),
    ("model/params", False),
    ("train/wall_s", False),
    ("train/final_loss", False),
])
def test_higher_is_better(metric: str, higher: bool) -> None:
    assert higher_is_better(metric) is higher
