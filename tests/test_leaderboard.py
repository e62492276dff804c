"""The leaderboard as a pure function: statistics, bootstrap intervals, ranking direction, failures,
protocols, the paired comparison with a baseline, rank stability and tuning cost; then the studies
built on the same rows (budget curves, sensitivity, protocol gap) and the printed report. Checked
against hand-computed answers on small fixtures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from harness.leaderboard import (
    BASELINE_COLUMNS,
    FRONT,
    RANK_COLUMNS,
    STATISTICS,
    TUNING_COLUMNS,
    bootstrap_ci,
    higher_is_better,
    is_detail_metric,
    leaderboard,
    mean_corruption_error,
    summary_metrics,
)
from harness.report import print_leaderboard
from harness.statistics import bootstrap_ci as statistics_bootstrap_ci
from harness.statistics import t_interval
from harness.studies import budget_curves, protocol_gap, sensitivity

A_ACCURACY = [0.90, 0.92, 0.94]
B_ACCURACY = [0.80, 0.82]
A_ECE = [0.05, 0.03, 0.04]
B_ECE = [0.02, 0.01]


def row(benchmark: str, method: str, seed: int, *, phase: str = "final", status: str = "ok",
        protocol: str | None = None, **metrics: float) -> dict[str, object]:
    """A store row; `protocol` is only set when given, as in stores written before protocols existed."""
    record = {"row_id": f"{phase}:{benchmark}:{method}:s{seed}", "phase": phase, "benchmark": benchmark,
              "method": method, "seed": seed, "status": status, "error": None if status == "ok" else "boom",
              **{name.replace("__", "/"): value for name, value in metrics.items()}}
    return record if protocol is None else {**record, "protocol": protocol, "row_id": f"{record['row_id']}:{protocol}"}


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


def line(table: pd.DataFrame, benchmark: str, method: str, protocol: str = "holdout") -> pd.Series:
    match = table[(table["benchmark"] == benchmark) & (table["method"] == method) & (table["protocol"] == protocol)]
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
    assert list(table.columns[:7]) == FRONT
    assert {f"test/accuracy:{s}" for s in ("mean", "std", "ci_low", "ci_high")} <= set(table.columns)
    assert not any(column.startswith("cost/") for column in table.columns)
    assert not any(column.startswith(("seed", "row_id")) for column in table.columns[7:])
    only = leaderboard(rows, metrics=["test/ece"])
    assert list(only.columns[7:]) == [
        "test/ece:mean", "test/ece:std", "test/ece:ci_low", "test/ece:ci_high",
        *BASELINE_COLUMNS, *RANK_COLUMNS, *TUNING_COLUMNS,
    ]


def test_std_and_interval_are_nan_for_a_single_run() -> None:
    table = leaderboard(pd.DataFrame.from_records([row("digits", "A", 0, test__accuracy=0.9)]))
    a = line(table, "digits", "A")
    assert a["test/accuracy:mean"] == 0.9
    assert math.isnan(a["test/accuracy:std"])
    assert math.isnan(a["test/accuracy:ci_low"]) and math.isnan(a["test/accuracy:ci_high"])  # one run: no interval
    assert a["rank"] == 1


def test_empty_and_phaseless_inputs_give_an_empty_table() -> None:
    for frame in (pd.DataFrame({"row_id": pd.Series([], dtype=str)}),
                  pd.DataFrame.from_records([row("digits", "A", 0, phase="tune", test__accuracy=0.9)])):
        table = leaderboard(frame)
        assert len(table) == 0
        assert list(table.columns) == FRONT


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


def test_leaderboard_ci_is_the_student_t_interval_of_the_successful_runs(rows: pd.DataFrame) -> None:
    table = leaderboard(rows)
    a, b = line(table, "digits", "A"), line(table, "digits", "B")
    assert (a["test/accuracy:ci_low"], a["test/accuracy:ci_high"]) == t_interval(A_ACCURACY)[:2]
    assert (b["test/ece:ci_low"], b["test/ece:ci_high"]) == t_interval(B_ECE)[:2]
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
    ("test/adv_pgd_linf_auac", True),
    ("test/adv_pgd_l2_e0p5_accuracy", True),
    ("test/corruption_accuracy", True),
    ("test/c_fog_s3_accuracy", True),
    ("test/mce", False),
    ("test/relative_mce", False),
    ("test/ece_ts", False),
    ("test/nll_ts", False),
    ("test/aurc", False),
    ("test/eaurc", False),
    ("test/rc_07", False),
    ("test/risk_at_cov90", False),
    ("test/ood_auroc_mean", True),
    ("test/ood_digits28_energy_aupr", True),
    ("test/ood_digits28_msp_fpr95", False),
    ("memory/peak_bytes", False),
    ("latency/cpu_bn_median_ms", False),
    ("train/flops", False),
])
def test_higher_is_better(metric: str, higher: bool) -> None:
    assert higher_is_better(metric) is higher


def test_bootstrap_ci_still_importable_from_the_leaderboard() -> None:
    assert bootstrap_ci is statistics_bootstrap_ci


# ---------------------------------------------------------------- protocols


def protocol_rows() -> pd.DataFrame:
    """digits under two protocols: A wins the held-out protocol, B wins when tuned on test."""
    records = []
    for protocol, a, b in (("oracle", [0.95, 0.96], [0.97, 0.98]), ("holdout", [0.90, 0.91], [0.85, 0.86])):
        records += [row("digits", "A", s, protocol=protocol, test__accuracy=v) for s, v in enumerate(a)]
        records += [row("digits", "B", s, protocol=protocol, test__accuracy=v) for s, v in enumerate(b)]
    records.append(row("digits", "A", 0, protocol="cross_dataset", test__accuracy=0.5))
    return pd.DataFrame.from_records(records)


def test_protocols_are_grouped_and_ranked_separately() -> None:
    table = leaderboard(protocol_rows())
    assert list(zip(table["protocol"], table["method"], table["rank"], strict=True)) == [
        ("holdout", "A", 1.0), ("holdout", "B", 2.0), ("cross_dataset", "A", 1.0),
        ("oracle", "B", 1.0), ("oracle", "A", 2.0),
    ]
    assert line(table, "digits", "A", "oracle")["test/accuracy:mean"] == pytest.approx(0.955)
    assert line(table, "digits", "A", "holdout")["n"] == 2


def test_missing_protocol_means_holdout(rows: pd.DataFrame) -> None:
    assert set(leaderboard(rows)["protocol"]) == {"holdout"}  # no protocol column at all
    mixed = pd.DataFrame.from_records([
        row("digits", "A", 0, test__accuracy=0.9), row("digits", "A", 1, protocol="holdout", test__accuracy=0.8),
    ])
    mixed.loc[0, "protocol"] = None
    table = leaderboard(mixed)
    assert len(table) == 1 and table["protocol"].iloc[0] == "holdout" and table["n"].iloc[0] == 2


# ---------------------------------------------------------------- paired comparison with a baseline


def test_paired_difference_against_the_baseline(rows: pd.DataFrame) -> None:
    table = leaderboard(rows, baseline="B")
    a, b, c = (line(table, "digits", m) for m in "ABC")
    # A - B on the shared seeds 0 and 1: 0.90 - 0.80 and 0.92 - 0.82; every A run beats every B run.
    assert a["vs_baseline:diff_mean"] == pytest.approx(0.10)
    assert (a["vs_baseline:diff_ci_low"], a["vs_baseline:diff_ci_high"]) == (pytest.approx(0.10), pytest.approx(0.10))
    assert (a["vs_baseline:p_improve"], a["vs_baseline:n_pairs"]) == (1.0, 2)
    assert all(math.isnan(b[column]) for column in BASELINE_COLUMNS)  # the baseline itself
    assert math.isnan(c["vs_baseline:diff_mean"]) and c["vs_baseline:n_pairs"] == 0  # C never succeeded


def test_paired_difference_follows_the_primary_metric_direction(rows: pd.DataFrame) -> None:
    a = line(leaderboard(rows, primary="test/ece", baseline="B"), "digits", "A")
    assert a["vs_baseline:diff_mean"] == pytest.approx(0.025)  # (0.05 - 0.02 + 0.03 - 0.01) / 2: A is worse
    assert a["vs_baseline:p_improve"] == 0.0


def test_absent_baseline_leaves_the_comparison_empty(rows: pd.DataFrame) -> None:
    for table in (leaderboard(rows), leaderboard(rows, baseline=None)):  # the default "erm" is not in rows
        assert table[list(BASELINE_COLUMNS)].isna().all().all()


def test_baseline_is_paired_within_its_protocol() -> None:
    table = leaderboard(protocol_rows(), baseline="B")
    assert line(table, "digits", "A", "holdout")["vs_baseline:diff_mean"] == pytest.approx(0.05)
    assert line(table, "digits", "A", "oracle")["vs_baseline:diff_mean"] == pytest.approx(-0.02)
    assert line(table, "digits", "A", "oracle")["vs_baseline:p_improve"] == 0.0
    assert math.isnan(line(table, "digits", "A", "cross_dataset")["vs_baseline:diff_mean"])  # no B there


# ---------------------------------------------------------------- rank stability


def test_rank_stability_when_one_seed_flips_the_order() -> None:
    frame = pd.DataFrame.from_records(
        [row("digits", "A", s, test__accuracy=v) for s, v in enumerate([0.9, 0.9, 0.7])]
        + [row("digits", "B", s, test__accuracy=v) for s, v in enumerate([0.8, 0.8, 0.85])]
    )
    table = leaderboard(frame)
    a, b = line(table, "digits", "A"), line(table, "digits", "B")
    assert (a["rank"], b["rank"]) == (1.0, 2.0)  # A's mean 0.833 beats B's 0.817
    assert a["rank:per_seed_mean"] == pytest.approx(4 / 3) and b["rank:per_seed_mean"] == pytest.approx(5 / 3)
    assert a["rank:per_seed_std"] == pytest.approx(math.sqrt(1 / 3))
    assert a["rank:stability"] == pytest.approx(2 / 3) and b["rank:stability"] == pytest.approx(2 / 3)


def test_rank_stability_on_the_shared_seeds(rows: pd.DataFrame) -> None:
    table = leaderboard(rows)
    a = line(table, "digits", "A")
    assert (a["rank:per_seed_mean"], a["rank:per_seed_std"], a["rank:stability"]) == (1.0, 0.0, 1.0)
    assert all(math.isnan(line(table, "digits", "C")[column]) for column in RANK_COLUMNS)


# ---------------------------------------------------------------- tuning cost


def tune_row(method: str, trial: int, *, protocol: str = "holdout", status: str = "ok", **values: float) -> dict:
    record = row("digits", method, 0, phase="tune", status=status, protocol=protocol,
                 **{k: v for k, v in values.items() if k != "wall_s"})
    return {**record, "row_id": f"{record['row_id']}:t{trial}", "trial_index": trial, "wall_s": values.get("wall_s")}


def test_tuning_cost_sums_the_trials_of_each_protocol(rows: pd.DataFrame) -> None:
    tuning = [
        tune_row("A", 0, wall_s=10.0, train__samples_seen=100.0, val__accuracy=0.9),
        tune_row("A", 1, wall_s=12.5, train__samples_seen=50.0, val__accuracy=0.8),
        tune_row("A", 2, status="failed", wall_s=1.0),
        tune_row("A", 0, protocol="oracle", wall_s=99.0, train__samples_seen=999.0),
        tune_row("B", 0, wall_s=5.0, train__samples_seen=10.0, train__flops=7.0),
        tune_row("B", 1, wall_s=5.0, train__samples_seen=10.0, train__flops=8.0),
    ]
    table = leaderboard(pd.concat([rows, pd.DataFrame.from_records(tuning)], ignore_index=True))
    a, b, c = (line(table, "digits", m) for m in "ABC")
    assert (a["tuning:trials"], a["tuning:failed"]) == (3, 1)
    assert (a["tuning:wall_s"], a["tuning:samples_seen"]) == (23.5, 150.0)
    assert math.isnan(a["tuning:flops"])  # no trial of A counted FLOPs
    # B also has the fixture's one tuning row (no FLOPs), which counts as a trial but adds no FLOPs
    assert (b["tuning:trials"], b["tuning:failed"], b["tuning:flops"]) == (3, 0, 15.0)
    # C's only tuning row in the fixture has no wall time or sample count
    assert (c["tuning:trials"], c["tuning:failed"]) == (1, 0) and math.isnan(c["tuning:wall_s"])
    assert "oracle" not in set(table["protocol"])  # tuning rows alone do not make a leaderboard line


def test_methods_without_tuning_rows_cost_nothing_known() -> None:
    table = leaderboard(pd.DataFrame.from_records([row("digits", "A", 0, test__accuracy=0.9)]))
    a = line(table, "digits", "A")
    assert (a["tuning:trials"], a["tuning:failed"]) == (0, 0)
    assert all(math.isnan(a[f"tuning:{name}"]) for name in ("wall_s", "samples_seen", "flops"))


# ---------------------------------------------------------------- mean corruption error and detail columns

BASE_ERRORS = {"fog": {1: 0.1, 2: 0.2, 3: 0.3}, "contrast": {1: 0.2, 2: 0.4, 3: 0.6}}


def halved(errors: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    return {family: {k: e / 2 for k, e in severities.items()} for family, severities in errors.items()}


def test_mce_of_the_baseline_is_one_and_of_half_its_errors_one_half() -> None:
    assert mean_corruption_error(BASE_ERRORS, BASE_ERRORS) == pytest.approx(1.0)
    assert mean_corruption_error(halved(BASE_ERRORS), BASE_ERRORS) == pytest.approx(0.5)
    # per family: fog (0.1+0.2+0.3)/0.6 = 1, contrast (0.1+0.2+0.3)/1.2 = 0.5; mCE averages families
    same_everywhere = {family: dict(BASE_ERRORS["fog"]) for family in BASE_ERRORS}
    assert mean_corruption_error(same_everywhere, BASE_ERRORS) == pytest.approx(0.75)


def test_relative_mce_subtracts_each_model_s_clean_error() -> None:
    assert mean_corruption_error(BASE_ERRORS, BASE_ERRORS, clean_error=0.05, baseline_clean_error=0.05) == 1.0
    # method: fog (0.1+0.2+0.3 - 3*0.1)/(0.6 - 3*0.05) = 0.3/0.45; contrast (1.2 - 0.3)/(1.2 - 0.15) = 0.9/1.05
    relative = mean_corruption_error(BASE_ERRORS, BASE_ERRORS, clean_error=0.1, baseline_clean_error=0.05)
    assert relative == pytest.approx((0.3 / 0.45 + 0.9 / 1.05) / 2)
    assert mean_corruption_error(halved(BASE_ERRORS), BASE_ERRORS, clean_error=0.025,
                                 baseline_clean_error=0.05) == pytest.approx(0.5)


def test_mce_needs_every_pair_the_baseline_has() -> None:
    missing = {"fog": {1: 0.1, 2: 0.2}, "contrast": dict(BASE_ERRORS["contrast"])}
    assert math.isnan(mean_corruption_error(missing, BASE_ERRORS))
    # only the baseline's finite pairs count: fog at severities 1 and 2, (0.1 + 0.2) / (0.1 + 0.2)
    assert mean_corruption_error(BASE_ERRORS, {"fog": {1: 0.1, 2: 0.2, 3: math.nan}, "contrast": {}}) == 1.0
    assert math.isnan(mean_corruption_error(BASE_ERRORS, {}))
    # a family that does not hurt the baseline has no ratio: left out for every method
    harmless = {**BASE_ERRORS, "brightness": {1: 0.0, 2: 0.0, 3: 0.0}}
    assert mean_corruption_error(halved(harmless) | {"brightness": {1: 0.5, 2: 0.5, 3: 0.5}}, harmless) == 0.5


def corruption_rows(baseline_errors: list[dict[str, float]], method_errors: list[dict[str, float]],
                    protocol: str | None = None) -> pd.DataFrame:
    """erm and A, one row per seed: `{"fog/1": e}` becomes `test/c_fog_s1_accuracy` = 1 - e, and `"clean"`
    the clean accuracy on the corruption subset (0.9 when not given)."""
    records = []
    for method, per_seed in (("erm", baseline_errors), ("A", method_errors)):
        for seed, errors in enumerate(per_seed):
            columns = {f"test__c_{name.replace('/', '_s')}_accuracy": 1 - e for name, e in errors.items() if name != "clean"}
            records.append(row("digits", method, seed, protocol=protocol, test__accuracy=0.9 + 0.01 * seed,
                               test__corruption_clean_accuracy_subset=1 - errors.get("clean", 0.1), **columns))
    return pd.DataFrame.from_records(records)


def test_leaderboard_mce_against_the_baseline() -> None:
    base = {"fog/1": 0.2, "fog/2": 0.4, "contrast/1": 0.3, "contrast/2": 0.5, "clean": 0.1}
    half = {name: e / 2 for name, e in base.items()}
    table = leaderboard(corruption_rows([base, base], [half, half]))
    erm, a = line(table, "digits", "erm"), line(table, "digits", "A")
    assert erm["test/mce:mean"] == pytest.approx(1.0) and a["test/mce:mean"] == pytest.approx(0.5)
    assert erm["test/relative_mce:mean"] == pytest.approx(1.0) and a["test/relative_mce:mean"] == pytest.approx(0.5)
    assert all(math.isnan(a[f"test/mce:{stat}"]) for stat in STATISTICS if stat != "mean")  # no spread over seeds
    without = leaderboard(corruption_rows([base], [half]), baseline="nobody")
    assert without["test/mce:mean"].isna().all() and without["test/relative_mce:mean"].isna().all()


def test_mce_is_computed_from_the_seed_means() -> None:
    # baseline fog error 0.2 and 0.4 over two seeds (mean 0.3), A's 0.2 and 0.1 (mean 0.15): mCE 0.15 / 0.3,
    # where the mean of per-seed ratios would be (1 + 0.25) / 2
    table = leaderboard(corruption_rows([{"fog/1": 0.2}, {"fog/1": 0.4}], [{"fog/1": 0.2}, {"fog/1": 0.1}]))
    assert line(table, "digits", "A")["test/mce:mean"] == pytest.approx(0.5)


def test_mce_is_paired_within_each_protocol() -> None:
    holdout = corruption_rows([{"fog/1": 0.2}], [{"fog/1": 0.1}], protocol="holdout")
    oracle = corruption_rows([{"fog/1": 0.4}], [{"fog/1": 0.1}], protocol="oracle")
    table = leaderboard(pd.concat([holdout, oracle], ignore_index=True))
    assert line(table, "digits", "A", "holdout")["test/mce:mean"] == pytest.approx(0.5)
    assert line(table, "digits", "A", "oracle")["test/mce:mean"] == pytest.approx(0.25)


def test_no_mce_columns_without_corruption_severities(rows: pd.DataFrame) -> None:
    assert not any("mce" in column for column in leaderboard(rows).columns)
    with_family_mean_only = rows.assign(**{"test/c_fog_accuracy": 0.7})
    assert not any("mce" in column for column in leaderboard(with_family_mean_only).columns)


@pytest.mark.parametrize(("metric", "detail"), [
    ("test/accuracy", False), ("test/adv_pgd_linf_auac", False), ("test/corruption_accuracy", False),
    ("test/mce", False), ("test/ece_ts", False), ("test/aurc", False), ("test/ood_auroc_mean", False),
    ("memory/peak_bytes", False), ("train/flops", False), ("test/pgd_linf_clean_accuracy_subset", False),
    ("latency/cpu_b1_p95_ms", False),
    ("test/adv_fgsm_linf_e0p02_accuracy", True), ("test/adv_pgd_l2_e2_accuracy", True),
    ("test/c_motion_blur_s5_accuracy", True), ("test/c_fog_accuracy", True),
    ("test/corruption_clean_accuracy_subset", True), ("test/rel_b14_count", True), ("test/rel_b0_conf", True),
    ("test/rc_19", True), ("test/risk_at_cov95", True), ("test/eaurc", True), ("test/temperature", True),
    ("test/nll_ts", True), ("test/ood_noise_uniform_energy_fpr95", True), ("latency/cpu_bn_median_ms", True),
])
def test_curve_points_and_breakdowns_are_detail_metrics(metric: str, detail: bool) -> None:
    assert is_detail_metric(metric) is detail


def test_summary_metrics_keep_order_and_drop_details() -> None:
    metrics = ["test/accuracy", "test/rc_00", "test/aurc", "test/c_fog_s1_accuracy", "test/corruption_accuracy"]
    assert summary_metrics(metrics) == ["test/accuracy", "test/aurc", "test/corruption_accuracy"]


# ---------------------------------------------------------------- studies: budget curves, sensitivity, protocol gap


def trials_fixture() -> pd.DataFrame:
    """Method A's four trials, stored out of order; trial 1 failed before reporting anything."""
    specs = [(2, "ok", 0.7, 100.0), (0, "ok", 0.5, 100.0), (3, "ok", 0.6, 100.0), (1, "failed", None, None)]
    records = [tune_row("A", index, status=status, val__accuracy=value, train__samples_seen=samples,
                        val__nll=None if value is None else 1 - value)
               for index, status, value, samples in specs]
    records.append(tune_row("A", 0, protocol="oracle", val__accuracy=0.99, train__samples_seen=5.0, val__nll=0.01))
    return pd.DataFrame.from_records(records)


def test_budget_curves_by_hand() -> None:
    curves = budget_curves(trials_fixture())
    holdout = curves[curves["protocol"] == "holdout"]
    assert holdout["trial"].tolist() == [1, 2, 3, 4]
    assert holdout["trial_index"].tolist() == [0, 1, 2, 3]  # search order, not storage order
    assert holdout["status"].tolist() == ["ok", "failed", "ok", "ok"]
    assert holdout["best_so_far"].tolist() == [0.5, 0.5, 0.7, 0.7]
    assert holdout["cumulative_samples_seen"].tolist() == [100.0, 100.0, 200.0, 300.0]
    assert curves.loc[curves["protocol"] == "oracle", "best_so_far"].tolist() == [0.99]
    lower = budget_curves(trials_fixture(), objective="val/nll")
    assert lower.loc[lower["protocol"] == "holdout", "best_so_far"].tolist() == pytest.approx([0.5, 0.5, 0.3, 0.3])


def test_budget_curves_are_monotone_and_start_at_the_first_success() -> None:
    rng = np.random.default_rng(0)
    records = [tune_row("A", i, val__accuracy=float(rng.uniform()), train__samples_seen=float(rng.integers(1, 9)))
               for i in range(1, 30)]
    records.append(tune_row("A", 0, status="failed"))
    curve = budget_curves(pd.DataFrame.from_records(records))
    assert math.isnan(curve["best_so_far"].iloc[0])
    best = curve["best_so_far"].iloc[1:]
    assert best.is_monotonic_increasing and curve["cumulative_samples_seen"].is_monotonic_increasing
    assert best.iloc[-1] == curve["value"].max()


def test_budget_curves_of_no_trials_is_an_empty_table(rows: pd.DataFrame) -> None:
    assert budget_curves(rows[rows["phase"] == "final"]).empty
    assert list(budget_curves(pd.DataFrame({"row_id": []})).columns)[:3] == ["benchmark", "protocol", "method"]


def test_sensitivity_by_hand() -> None:
    spread = sensitivity(trials_fixture())
    a = spread[spread["protocol"] == "holdout"].iloc[0]
    assert (a["method"], a["n"]) == ("A", 3)  # the failed trial has no score
    assert (a["min"], a["max"], a["median"]) == (0.5, 0.7, 0.6)
    assert a["std"] == pytest.approx(0.1)
    assert a["iqr"] == pytest.approx(0.1)  # 0.65 - 0.55, linear quantiles of 0.5, 0.6, 0.7
    oracle = spread[spread["protocol"] == "oracle"].iloc[0]
    assert oracle["n"] == 1 and math.isnan(oracle["std"]) and oracle["iqr"] == 0.0


def test_protocol_gap_with_two_protocols() -> None:
    board = pd.DataFrame({
        "benchmark": ["d"] * 7 + ["e"] * 2,
        "protocol": ["holdout"] * 4 + ["oracle"] * 3 + ["holdout"] * 2,
        "method": ["A", "B", "C", "D", "A", "B", "C", "A", "B"],
        "rank": [1, 2, 3, np.nan, 2, 1, 3, 1, 2],
    })
    gap = protocol_gap(board)
    assert gap.protocols == ["holdout", "oracle"]
    assert gap.labels == {"holdout": "holdout", "oracle": "oracle (tuned on test)"}
    d = gap.ranks[gap.ranks["benchmark"] == "d"].set_index("method")
    assert d.loc[["A", "B", "C"], "holdout"].tolist() == [1, 2, 3]
    assert d.loc[["A", "B", "C"], "oracle"].tolist() == [2, 1, 3]
    assert math.isnan(d.loc["D", "oracle"])
    assert len(gap.ranks) == 6  # no e/C or e/D rows invented
    pair = gap.agreement.iloc[0]
    assert len(gap.agreement) == 1  # e ran one protocol: nothing to compare
    assert (pair["benchmark"], pair["protocol_a"], pair["label_b"], pair["n_methods"]) == (
        "d", "holdout", "oracle (tuned on test)", 3)
    assert pair["kendall_tau"] == pytest.approx(1 / 3)  # one swapped pair of three


def test_protocol_gap_of_the_leaderboard() -> None:
    gap = protocol_gap(leaderboard(protocol_rows()))
    assert gap.protocols == ["holdout", "cross_dataset", "oracle"]
    taus = {(r["protocol_a"], r["protocol_b"]): (r["kendall_tau"], r["n_methods"]) for _, r in gap.agreement.iterrows()}
    assert taus[("holdout", "oracle")] == (-1.0, 2)
    assert math.isnan(taus[("holdout", "cross_dataset")][0])  # one shared method cannot be ordered
    assert protocol_gap(leaderboard(pd.DataFrame({"row_id": []}))).agreement.empty


# ---------------------------------------------------------------- the printed report


def printed(table: pd.DataFrame, **kwargs: object) -> str:
    console = Console(record=True, width=240, highlight=False)
    print_leaderboard(table, console, **kwargs)
    return console.export_text()


def test_report_shows_the_paired_difference(rows: pd.DataFrame) -> None:
    text = printed(leaderboard(rows, baseline="B"), baseline="B")
    assert "ranked by test/accuracy" in text and "Δ acc % vs B [95% CI]" in text
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") > 4}
    assert lines["A"].rstrip(" │").endswith("+10.00 [+10.00, +10.00]")
    assert lines["B"].rstrip(" │").endswith("baseline")
    assert "protocol" not in text  # one protocol: no column
    assert "Δ" not in printed(leaderboard(rows))  # no erm in these rows: no comparison column


def test_report_shows_protocols_when_several() -> None:
    text = printed(leaderboard(protocol_rows(), baseline="B"), baseline="B")
    assert "protocol" in text and "within each protocol" in text
    assert text.count("oracle (tuned on test)") == 2 and text.count("cross_dataset") == 1
    oracle_only = leaderboard(protocol_rows()[lambda r: r["protocol"] == "oracle"])
    assert "protocol oracle (tuned on test)" in printed(oracle_only)


def test_report_escapes_method_names() -> None:
    table = leaderboard(pd.DataFrame.from_records([row("digits", "[bold]x[/bold]", 0, test__accuracy=0.9)]))
    assert "[bold]x[/bold]" in printed(table)


def test_report_leaves_curve_columns_out() -> None:
    base = {"fog/1": 0.2, "fog/2": 0.4}
    frame = corruption_rows([base], [base]).assign(**{"test/rel_b3_acc": 0.4, "test/rc_00": 0.01})
    text = printed(leaderboard(frame), baseline="erm")
    assert "acc %" in text
    assert not any(name in text for name in ("c_fog_s1", "rel_b3", "rc_00", "mce"))
