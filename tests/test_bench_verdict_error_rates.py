"""bench/verdict_error_rates.py at toy size, so the bench cannot rot: its tables render, with one row per
test and n, the verdicts' test never rejects more normal nulls than the plain t test, and the uncapped
variant of the stretch-cap experiment is the harness's own interval and test."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from harness.statistics import skew_corrected_bounds, skew_corrected_p

ROOT = Path(__file__).resolve().parent.parent


def test_the_bench_renders_its_tables_at_toy_size(capsys: pytest.CaptureFixture) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "bench"))
        bench = importlib.import_module("verdict_error_rates")
    assert bench.main(["--draws", "2000", "--sizes", "3", "5"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| 3 |", "| 5 |")) and "cap" not in line
            and line.count("|") == 11]
    assert len(rows) == 6 and "| Hall | 98.7% |" in out
    cap_rows = [line for line in out.splitlines() if line.startswith("| 5 |") and line.count("|") == 7]
    assert len(cap_rows) == len(bench.CAPS) and "| -1 | none |" in out
    plain, _, both = (float(row.split("|")[3].strip().rstrip("%")) for row in rows[:3])
    assert both <= plain


@pytest.mark.parametrize("n", [3, 4, 6])
def test_the_uncapped_experiment_is_the_harness_interval_and_test(n: int) -> None:
    """Uncapped, the experiment is the harness's interval and test; capped, its bounds are those of Hall's
    inverse with |h^-1(z)| <= cap |z| worked out directly (then the hull with t from 4 values)."""
    from scipy import stats

    from harness.statistics import THREE_VALUES_TAIL_SHRINK, hall_terms

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "bench"))
        bench = importlib.import_module("verdict_error_rates")
    samples = 1.0 - np.random.default_rng(n).exponential(1.0, (500, n))
    low, high = skew_corrected_bounds(samples)
    capped_low, capped_high = bench.capped_bounds(samples, None)
    assert np.allclose(low, capped_low) and np.allclose(high, capped_high)
    assert np.allclose(bench.capped_p(samples, None), skew_corrected_p(samples, 0.0))

    terms, cap = hall_terms(samples), 3.0
    quantile = stats.t.ppf(1.0 - 0.025 * (THREE_VALUES_TAIL_SHRINK if n == 3 else 1.0), n - 1)

    def capped_inverse(z: np.ndarray) -> np.ndarray:
        inverse = (np.cbrt(1.0 + 3.0 * terms.a * z) - 1.0) / terms.a
        return np.sign(z) * np.minimum(np.abs(inverse), cap * np.abs(z))

    direct_low = terms.mean - terms.scale * capped_inverse(quantile - terms.b)
    direct_high = terms.mean - terms.scale * capped_inverse(-quantile - terms.b)
    if n > 3:
        direct_low = np.minimum(direct_low, terms.mean - quantile * terms.scale)
        direct_high = np.maximum(direct_high, terms.mean + quantile * terms.scale)
    three_low, three_high = bench.capped_bounds(samples, cap)
    assert np.allclose(three_low, direct_low) and np.allclose(three_high, direct_high)
    assert (three_low >= low - 1e-12).all() and (three_low > low + 1e-9).any()  # a cap only narrows the stretch
