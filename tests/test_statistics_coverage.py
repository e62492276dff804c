"""The intervals cover at their stated 95% (within 93-97%) at n = 3, 5 and 10: the Student-t on normal and
mildly skewed data, the skew-corrected t on strongly skewed data too (at n = 3 computed at 98.7%, the level
that keeps normal noise at most 97% and exponential noise at least 93%). Seeded simulations, vectorised so
the check is fast and never flaky."""

from __future__ import annotations

import numpy as np
import pytest

from harness.statistics import (
    SKEW_T_INTERVAL,
    SMALL_N_INTERVAL,
    T_INTERVAL,
    THREE_VALUES_INTERVAL,
    paired_t_difference,
    skew_corrected_bounds,
    skew_corrected_interval,
    t_interval,
)

REPLICATIONS = 20_000  # standard error of a 95% coverage: 0.15 points, far inside the 2-point tolerance


def coverage_of_t(samples: np.ndarray, true_mean: float) -> float:
    """Fraction of rows whose t interval (the same formula as `t_interval`, vectorised) covers `true_mean`."""
    from scipy import stats

    n = samples.shape[1]
    half = stats.t.ppf(0.975, n - 1) * samples.std(axis=1, ddof=1) / np.sqrt(n)
    mean = samples.mean(axis=1)
    return float(((mean - half <= true_mean) & (true_mean <= mean + half)).mean())


def test_the_vectorised_formula_is_t_interval() -> None:
    sample = np.array([0.81, 0.84, 0.86])
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * sample.std(ddof=1) / np.sqrt(3)
    assert t_interval(sample) == pytest.approx((sample.mean() - half, sample.mean() + half, T_INTERVAL))
    assert t_interval([1.0, 2.0, 3.0])[:2] != (1.0, 3.0)  # the percentile bootstrap's [min, max]


MEANS = {  # name -> (draw, true mean); lognormal sigma 0.25 has skewness 0.78
    "normal": (lambda rng, shape: rng.normal(0.85, 0.01, shape), 0.85),
    "lognormal": (lambda rng, shape: rng.lognormal(0.0, 0.25, shape), float(np.exp(0.25**2 / 2))),
}
DIFFERENCES = {  # name -> per-side draw of a seed's score: the paired difference of two such runs
    "normal": lambda rng, shape: rng.normal(0.0, 0.01, shape),
    "exponential": lambda rng, shape: rng.exponential(0.01, shape),
    "lognormal": lambda rng, shape: rng.lognormal(-5.0, 0.5, shape),
}


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("name", list(MEANS))
def test_the_mean_interval_covers_at_its_stated_level(name: str, n: int) -> None:
    draw, true_mean = MEANS[name]
    samples = draw(np.random.default_rng(n), (REPLICATIONS, n))
    assert 0.93 <= coverage_of_t(samples, true_mean) <= 0.97


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("name", list(DIFFERENCES))
def test_the_paired_difference_interval_covers_at_its_stated_level(name: str, n: int) -> None:
    """Method and baseline share each seed's effect (it cancels) and add their own skewed noise; the true
    difference is the 0.004 the method adds."""
    rng, draw = np.random.default_rng(100 + n), DIFFERENCES[name]
    shared = rng.normal(0.0, 0.05, (REPLICATIONS, n))
    method, baseline = 0.854 + shared + draw(rng, (REPLICATIONS, n)), 0.85 + shared + draw(rng, (REPLICATIONS, n))
    assert 0.93 <= coverage_of_t(method - baseline, 0.004) <= 0.97
    first = paired_t_difference(dict(enumerate(method[0])), dict(enumerate(baseline[0])))
    assert first.interval.method == T_INTERVAL and first.n_pairs == n
    assert first.interval[:2] == pytest.approx(t_interval(method[0] - baseline[0])[:2])


# The skew-corrected interval (the claims page's): stated 95% within 93-97% on normal, mildly and strongly
# skewed noise (skewness up to 2, the exponential's), at n = 3, 5 and 10.
SKEWED_MEANS = {  # name -> (draw, true mean); lognormal sigma 0.5 has skewness 1.75, the exponential 2
    "normal": (lambda rng, shape: rng.normal(0.85, 0.01, shape), 0.85),
    "lognormal 0.25": (lambda rng, shape: rng.lognormal(0.0, 0.25, shape), float(np.exp(0.25**2 / 2))),
    "lognormal 0.5": (lambda rng, shape: rng.lognormal(0.0, 0.5, shape), float(np.exp(0.5**2 / 2))),
    "exponential": (lambda rng, shape: 0.8 + rng.exponential(0.01, shape), 0.81),
    "left-skewed exponential": (lambda rng, shape: 0.9 - rng.exponential(0.01, shape), 0.89),
}
# At n = 3 the window is narrow (normal 96.9%, exponential 93.3%): more replications keep the check's own
# noise (standard error 0.05 points) well inside it.
THREE_VALUE_REPLICATIONS = 200_000


def skew_coverage(samples: np.ndarray, true_mean: float) -> float:
    low, high = skew_corrected_bounds(samples)
    return float(((low <= true_mean) & (true_mean <= high)).mean())


def test_the_vectorised_bounds_are_skew_corrected_interval() -> None:
    sample = np.array([0.80, 0.81, 0.86, 0.84])
    low, high = skew_corrected_bounds(sample[None, :])
    assert skew_corrected_interval(sample) == pytest.approx((low[0], high[0], SKEW_T_INTERVAL))
    right_skewed = skew_corrected_interval([0.80, 0.80, 0.81, 0.86])  # one run far above the rest
    t = t_interval([0.80, 0.80, 0.81, 0.86])
    assert right_skewed.high - 0.8175 > 0.8175 - right_skewed.low and right_skewed.high > t.high
    assert np.isnan(skew_corrected_interval([0.8]).low)
    three = skew_corrected_interval([0.80, 0.81, 0.86])  # three values: the correction at 98.7%, wider than t's
    assert three.method == THREE_VALUES_INTERVAL and three.high - three.low > np.ptp(t_interval([0.80, 0.81, 0.86])[:2])
    two = skew_corrected_interval([0.80, 0.86])  # two values have no skewness: the t interval
    assert two.method == SMALL_N_INTERVAL and two[:2] == pytest.approx(t_interval([0.80, 0.86])[:2])


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("name", list(SKEWED_MEANS))
def test_the_skew_corrected_interval_covers_at_its_stated_level(name: str, n: int) -> None:
    draw, true_mean = SKEWED_MEANS[name]
    samples = draw(np.random.default_rng(200 + n), (THREE_VALUE_REPLICATIONS if n == 3 else REPLICATIONS, n))
    assert 0.93 <= skew_coverage(samples, true_mean) <= 0.97


def test_no_level_of_the_t_interval_alone_covers_exponential_noise_at_three_values() -> None:
    """Why n = 3 needs the correction: the t interval at the level where normal noise covers 97% covers
    exponential noise only about 92%, short of 93%; the corrected one at 98.7% reaches 93.3%."""
    from scipy import stats

    draw, true_mean = SKEWED_MEANS["exponential"]
    samples = draw(np.random.default_rng(250), (THREE_VALUE_REPLICATIONS, 3))
    half = stats.t.ppf(0.985, 2) * samples.std(axis=1, ddof=1) / np.sqrt(3)  # the t interval at 97%
    t_coverage = float((np.abs(samples.mean(axis=1) - true_mean) <= half).mean())
    assert 0.91 <= t_coverage < 0.925 < 0.93 <= skew_coverage(samples, true_mean)


@pytest.mark.parametrize("n", [5, 10])
def test_the_t_interval_falls_short_where_the_correction_holds(n: int) -> None:
    """Strongly skewed noise at n = 5 and 10: why the claims page shows the skew-corrected interval."""
    draw, true_mean = SKEWED_MEANS["exponential"]
    samples = draw(np.random.default_rng(300 + n), (REPLICATIONS, n))
    assert coverage_of_t(samples, true_mean) < 0.92 < 0.93 <= skew_coverage(samples, true_mean)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_skew_corrected_paired_difference_covers_at_its_stated_level(n: int) -> None:
    """The method now and then lands well above its usual score (lognormal noise, skewness 1.75) while the
    baseline's noise is normal: the paired differences are skewed; the true difference is 0.004."""
    rng = np.random.default_rng(400 + n)
    shared = rng.normal(0.0, 0.05, (REPLICATIONS, n))
    lift = 0.01 * (rng.lognormal(0.0, 0.5, (REPLICATIONS, n)) - np.exp(0.125))
    method = 0.854 + shared + lift
    baseline = 0.85 + shared + rng.normal(0.0, 0.002, (REPLICATIONS, n))
    assert 0.93 <= skew_coverage(method - baseline, 0.004) <= 0.97
    first = paired_t_difference(dict(enumerate(method[0])), dict(enumerate(baseline[0])),
                                interval=skew_corrected_interval)
    assert first.interval.method == (SKEW_T_INTERVAL if n >= 4 else THREE_VALUES_INTERVAL) and first.n_pairs == n
