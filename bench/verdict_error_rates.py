"""What the verdicts' test and the claims page's interval cost and buy on skewed seed-to-seed noise.

A seeded, vectorised simulation of three one-sided tests of "no gain" (the plain paired t test, Hall's
skew-corrected t test alone, and the verdicts' test, which needs both: `harness.statistics.
skew_corrected_p`): the share of null samples called "supported" at 5% (and, for normal differences, at
5%/6, a Holm level), the power on a normal 1-sd effect, and the level a test would have to run at to keep
left-skewed (1 - exponential) differences at 5%, with its power then: why no test from 3 to 5 values
removes the excess without losing most of its power. Then, at n = 3, the coverage of the t interval and of
Hall's at several levels on normal and exponential noise: where 93-97% on both is reachable. Last, where
Hall's correction saturates (g'(T) = (1 + aT)^2 reaches 0 at T = -1/a, so on a strongly skewed sample its p
stops falling as t grows and its interval's long side stretches far out), and what a cap on that stretch
(the corrected statistic kept to at least 1/k of t's distance from its centre) would cost: coverage and the
left-skewed nulls' false rejections, the one error the correction is there to hold down.

    python bench/verdict_error_rates.py [--draws 200000]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from harness.statistics import (
    THREE_VALUES_TAIL_SHRINK,
    HallTerms,
    hall_statistic,
    hall_terms,
    skew_corrected_bounds,
    skew_corrected_p,
)

Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
NULLS: dict[str, Draw] = {  # mean-zero paired differences; skewness 0, 0.78, 1.75, 2, -2
    "normal": lambda rng, shape: rng.normal(0.0, 1.0, shape),
    "lognormal 0.25": lambda rng, shape: rng.lognormal(0.0, 0.25, shape) - np.exp(0.25**2 / 2),
    "lognormal 0.5": lambda rng, shape: rng.lognormal(0.0, 0.5, shape) - np.exp(0.5**2 / 2),
    "exponential": lambda rng, shape: rng.exponential(1.0, shape) - 1.0,
    "left-skewed exponential": lambda rng, shape: 1.0 - rng.exponential(1.0, shape),
}


def p_values(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Each test's one-sided p-value of H0: mean <= 0, per row of `samples`."""
    n = samples.shape[1]
    terms = hall_terms(samples)
    t = terms.mean / terms.scale
    return {"plain t": stats.t.sf(t, n - 1), "Hall alone": stats.t.sf(hall_statistic(t, terms), n - 1),
            "verdicts' (both)": skew_corrected_p(samples, 0.0)}


def level_for(null_p: np.ndarray, target: float = 0.05) -> float:
    """The nominal level at which this test's null rejection rate is `target`."""
    return float(np.quantile(null_p, target))


def test_table(draws: int, sizes: Sequence[int]) -> list[str]:
    lines = ["| n | test | " + " | ".join(NULLS) + " | normal at 5%/6 | power, 1 sd | level for 5% left-skewed "
             "(its power) |", "|---" * (len(NULLS) + 5) + "|"]
    for n in sizes:
        nulls = {name: p_values(draw(np.random.default_rng(n), (draws, n))) for name, draw in NULLS.items()}
        effect = p_values(np.random.default_rng(100 + n).normal(1.0, 1.0, (draws, n)))
        for test in effect:
            rates = " | ".join(f"{(nulls[name][test] <= 0.05).mean():.1%}" for name in NULLS)
            holm = (nulls["normal"][test] <= 0.05 / 6).mean() / (0.05 / 6)
            level = level_for(nulls["left-skewed exponential"][test])
            lines.append(f"| {n} | {test} | {rates} | {holm:.2f}x | {(effect[test] <= 0.05).mean():.1%} "
                         f"| {level:.2%} ({(effect[test] <= level).mean():.1%}) |")
    return lines


def three_value_intervals(draws: int) -> list[str]:
    normal = np.random.default_rng(1).normal(0.0, 1.0, (draws, 3))
    exponential = np.random.default_rng(2).exponential(1.0, (draws, 3))
    lines = ["| n = 3 interval | nominal | normal | exponential |", "|---|---|---|---|"]
    for level in (0.95, 0.96, 0.97, 0.98, 0.987, 0.99):
        quantile = stats.t.ppf(0.5 + level / 2, 2)
        for name, transform in (("Student t", lambda t, _: t), ("Hall", hall_statistic)):
            covered = [np.abs(transform((x.mean(1) - mu) / hall_terms(x).scale, hall_terms(x))) <= quantile
                       for x, mu in ((normal, 0.0), (exponential, 1.0))]
            lines.append(f"| {name} | {level:.1%} | {covered[0].mean():.1%} | {covered[1].mean():.1%} |")
    return lines


def capped_bounds(samples: np.ndarray, cap: float | None) -> tuple[np.ndarray, np.ndarray]:
    """`harness.statistics.skew_corrected_bounds` with Hall's stretch kept to `cap` x |q - b| scales from the
    mean on either side (None: the harness's bounds). From 4 values the t interval's side still holds."""
    low, high = skew_corrected_bounds(samples)
    if cap is None:
        return low, high
    n = samples.shape[1]
    quantile = stats.t.ppf(1.0 - 0.025 * (THREE_VALUES_TAIL_SHRINK if n == 3 else 1.0), n - 1)
    terms = hall_terms(samples)
    floor = terms.mean - terms.scale * cap * (quantile - terms.b)
    ceiling = terms.mean + terms.scale * cap * (quantile + terms.b)
    if n > 3:  # the hull with the t interval: the cap cannot pull a bound inside it
        floor = np.minimum(floor, terms.mean - quantile * terms.scale)
        ceiling = np.maximum(ceiling, terms.mean + quantile * terms.scale)
    return np.maximum(low, floor), np.minimum(high, ceiling)


def capped_p_of(t: np.ndarray, terms: HallTerms, n: int, cap: float | None) -> np.ndarray:
    """The verdicts' one-sided p (both tests) at t, Hall's statistic capped: g = b + sign(T) max(|h(T)|, |T| / cap),
    h = g - b (None: uncapped, `harness.statistics.skew_corrected_p`)."""
    h = hall_statistic(t, terms) - terms.b
    if cap is not None:
        h = np.sign(t) * np.maximum(np.abs(h), np.abs(t) / cap)
    return np.maximum(stats.t.sf(t, n - 1), stats.t.sf(h + terms.b, n - 1))


def capped_p(samples: np.ndarray, cap: float | None) -> np.ndarray:
    """`capped_p_of` for each row of `samples`, against "no gain" (mean <= 0)."""
    terms = hall_terms(samples)
    return capped_p_of(terms.mean / terms.scale, terms, samples.shape[1], cap)


CAPS = (None, 4.0, 3.0, 2.0, 1.5)


def saturation_table(n: int = 6) -> list[str]:
    """Hall's one-sided p at t for a sample of skewness G (uncapped, and capped at 3): where it plateaus."""
    t_values = (3.0, 5.0, 7.0, 10.0, 15.0)
    lines = [f"| n = {n}, skewness G | cap | " + " | ".join(f"p at t = {t:g}" for t in t_values) + " |",
             "|---" * (len(t_values) + 2) + "|"]
    for skewness in (0.0, -0.5, -1.0, -1.5):
        a = np.full(len(t_values), skewness / (3.0 * np.sqrt(n)))
        terms = HallTerms(np.zeros(len(t_values)), np.ones(len(t_values)), a, a / 2.0)
        t = np.array(t_values)
        for cap in (None, 3.0):
            p = capped_p_of(t, terms, n, cap)
            lines.append(f"| {skewness:g} | {cap or 'none'} | " + " | ".join(f"{value:.2g}" for value in p) + " |")
    return lines


def cap_table(draws: int, sizes: Sequence[int]) -> list[str]:
    """Coverage (normal, exponential) and left-skewed null rejections at 5% for each cap on the stretch."""
    lines = ["| n | cap | coverage, normal | coverage, exponential | left-skewed nulls called supported at 5% "
             "| power, 1 sd |", "|---|---|---|---|---|---|"]
    for n in sizes:
        normal = np.random.default_rng(10 + n).normal(0.0, 1.0, (draws, n))
        exponential = np.random.default_rng(20 + n).exponential(1.0, (draws, n))
        left = 1.0 - np.random.default_rng(30 + n).exponential(1.0, (draws, n))
        effect = np.random.default_rng(40 + n).normal(1.0, 1.0, (draws, n))
        for cap in CAPS:
            covered = []
            for sample, mean in ((normal, 0.0), (exponential, 1.0)):
                low, high = capped_bounds(sample, cap)
                covered.append(((low <= mean) & (mean <= high)).mean())
            lines.append(f"| {n} | {cap or 'none (harness)'} | {covered[0]:.1%} | {covered[1]:.1%} | "
                         f"{(capped_p(left, cap) <= 0.05).mean():.1%} | {(capped_p(effect, cap) <= 0.05).mean():.1%} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/verdict_error_rates.py", description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200_000, help="simulated samples per cell")
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 10], help="seed pairs n")
    args = parser.parse_args(argv)
    print("\n".join(test_table(args.draws, args.sizes) + [""] + three_value_intervals(args.draws) + [""]
                    + saturation_table() + [""] + cap_table(args.draws, args.sizes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
