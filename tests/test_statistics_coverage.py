"""The Student-t intervals cover at their stated 95% (within 93-97%) at n = 3, 5 and 10, on normal and on
skewed data: seeded simulations, vectorised so the check is fast and never flaky."""

from __future__ import annotations

import numpy as np
import pytest

from harness.statistics import T_INTERVAL, paired_t_difference, t_interval

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
