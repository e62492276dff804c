"""Claim-survival curves: `harness.claims.budget_curves` judges a claim across the budgets of one suite,
`dashboards.claims` shows them, and `python -m harness.sweep` runs a suite once per budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dashboards.claims import budget_curve_lines, render
from harness import sweep
from harness.claims import Budget, ClaimVerdict, TrainingLength, budget_curves
from harness.method import Claim


def record(epochs: float, verdict: str, difference: float, *, seeds: int = 3, metric: str = "test/accuracy",
           method: str = "up") -> ClaimVerdict:
    budget = Budget(dataset="d", model="m", final=TrainingLength(epochs, None), tuning=TrainingLength(None, 100),
                    trials=3, seeds=seeds)
    return ClaimVerdict(method=method, suite="toy", benchmark="b", claim=Claim("gains", metric=metric), mean=0.8,
                        ci=(0.79, 0.81), baseline_mean=0.8 - difference, difference=difference,
                        difference_ci=(difference - 0.01, difference + 0.01), seeds=seeds, budget=budget,
                        verdict=verdict)  # type: ignore[arg-type]


def test_a_claim_at_several_budgets_becomes_one_curve_smallest_first() -> None:
    rows = [record(16, "inconclusive", 0.002), record(1, "supported", 0.03), record(4, "supported", 0.01),
            record(4, "supported", 0.012, seeds=2),  # the same budget with fewer seeds: not counted
            record(1, "supported", 0.03, method="alone")]  # one budget only: no curve
    (curve,) = budget_curves(rows)
    assert curve.method == "up" and [p.budget.epochs for p in curve.points] == [1, 4, 16]
    assert [p.verdict for p in curve.points] == ["supported", "supported", "inconclusive"]
    assert curve.points[1].effect == pytest.approx(0.01) and curve.points[1].seeds == 3
    assert curve.trend == "supported at the smallest budget, inconclusive at the largest; the effect falls with budget"


def test_the_effect_is_signed_so_that_up_is_good_and_a_sign_change_is_named() -> None:
    rows = [record(1, "not supported", 0.01, metric="test/ece"), record(4, "supported", -0.02, metric="test/ece")]
    (curve,) = budget_curves(rows)  # ECE is lower-is-better: a drop of 0.02 is a gain of 0.02
    assert [p.effect for p in curve.points] == pytest.approx([-0.01, 0.02])
    assert curve.points[1].effect_ci == pytest.approx((0.01, 0.03))
    assert curve.trend.endswith("supported at the largest; the effect rises with budget, changing sign")
    assert budget_curves([replace(r, verdict="supported") for r in rows])[0].trend.startswith("supported at every")


def test_the_claims_page_shows_budget_curves_only_when_a_suite_ran_at_several_budgets(tmp_path: Path) -> None:
    rows = [record(1, "supported", 0.03), record(4, "inconclusive", 0.004)]
    page = render(rows, tmp_path)
    assert "## Budget curves" in page
    assert "1 ep: **supported** 3.00 [2.00, 4.00] (n = 3) → 4 ep: **inconclusive** 0.40 [-0.60, 1.40] (n = 3)" in page
    assert "## Budget curves" not in render(rows[:1], tmp_path) and budget_curve_lines([]) == []


def test_sweep_parses_budgets_and_refuses_bad_ones() -> None:
    assert sweep.parse_epochs("1,4,16") == [1.0, 4.0, 16.0]
    for bad in ("1,x", "0,4", "4,4", ""):
        with pytest.raises(Exception, match="--epochs"):
            sweep.parse_epochs(bad)
    assert sweep.budget_overrides(Path("suites/smoke.yaml"), 4) == ["benchmarks[0].budget={epochs: 4}"]


def test_sweep_runs_the_suite_once_per_budget_and_validates_first(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(sweep, "run_main", lambda argv: calls.append(list(argv)) or 0)
    assert sweep.main(["suites/smoke.yaml", "--epochs", "1,2", "--out", str(tmp_path)]) == 0
    assert [c[1] for c in calls] == ["--set=benchmarks[0].budget={epochs: 1}", "--set=benchmarks[0].budget={epochs: 2}"]
    assert all(c[-2:] == ["--out", str(tmp_path)] for c in calls)
    calls.clear()
    assert sweep.main(["suites/smoke.yaml", "--epochs", "1,2", "--set", "tuning.trails=2"]) == 2  # a typo
    assert calls == []  # nothing ran
