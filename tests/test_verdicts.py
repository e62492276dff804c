"""harness.verdicts: each of the four verdicts from known differences, gates named, MDE and n to resolve,
Holm's adjustment, and on many simulated null suites "supported" at most at the stated error rate."""

from __future__ import annotations

import numpy as np
import pytest

from harness.statistics import skew_corrected_bounds, skew_corrected_p
from harness.verdicts import (
    ClaimEvidence,
    Gate,
    baseline_adequacy,
    holm_adjusted,
    inconclusive_reason,
    judge,
    judge_suite,
    minimum_detectable_effect,
    n_to_resolve,
    no_seed_at_chance,
    one_sided_p,
    precondition,
    simulated_power,
    tuning_health,
)


def test_each_verdict_from_known_differences() -> None:
    assert judge([0.02, 0.03, 0.025], kind="better", margin=0.01).verdict == "supported"
    assert judge([-0.05, -0.04, -0.06], kind="better", margin=0.01).verdict == "not supported"  # worse
    flat = judge([0.001, -0.001, 0.0005, -0.0005, 0.0], kind="better", margin=0.01)
    assert flat.verdict == "not supported" and "TOST" in flat.reason  # equivalent within the margin
    noisy = judge([0.02, -0.01, 0.03], kind="better", margin=0.01)
    assert noisy.verdict == "inconclusive" and noisy.n_to_resolve is not None and noisy.n_to_resolve > 3
    assert noisy.mde == pytest.approx(minimum_detectable_effect(float(np.std([0.02, -0.01, 0.03], ddof=1)), 3))
    assert judge([-0.002, 0.001, -0.001], kind="no_worse", margin=0.01).verdict == "supported"
    assert judge([-0.05, -0.04, -0.06], kind="no_worse", margin=0.01).verdict == "not supported"


def test_a_failing_gate_yields_not_tested_with_the_gate_named() -> None:
    gates = [baseline_adequacy(0.849, 0.91), tuning_health([0.85, 0.84, 0.86], chance=0.1),
             no_seed_at_chance(0, 2), precondition("teacher margin", 0.005, 0.03)]
    judged = judge([0.02, 0.03, 0.025], kind="better", margin=0.01, gates=gates)
    assert judged.verdict == "not tested"
    assert judged.failed_gates == ("baseline adequate", "no seed at chance", "teacher margin")
    assert "teacher margin" in judged.reason
    assert judge([0.02, 0.03, 0.025], kind="better", margin=0.01, gates=[Gate("x", True)]).verdict == "supported"


def test_tuning_health_needs_a_best_trial_above_chance_and_at_most_a_third_failed() -> None:
    assert tuning_health([0.8, 0.7, float("nan")], chance=0.1).passed  # one of three failed: allowed
    assert not tuning_health([0.8, float("nan"), 0.11], chance=0.1).passed  # two of three bad
    assert not tuning_health([0.11, 0.1, 0.105], chance=0.1).passed  # a failed search is no evidence
    undeclared = baseline_adequacy(0.85, None)  # no reference declared: it cannot block, nor pass for checked
    assert undeclared.passed and not undeclared.checked and baseline_adequacy(0.90, 0.91).checked


def test_mde_shrinks_with_n_and_n_to_resolve_reaches_the_needed_effect() -> None:
    assert minimum_detectable_effect(0.01, 10) < minimum_detectable_effect(0.01, 3)
    n = n_to_resolve(0.01, 0.01)
    assert n is not None and minimum_detectable_effect(0.01, n) <= 0.01 < minimum_detectable_effect(0.01, n - 1)
    assert n_to_resolve(1.0, 1e-6) is None  # no affordable n


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_mde_is_the_verdicts_tests_own(n: int) -> None:
    """At the MDE the verdicts' test detects a normal effect 80% of the time on fresh draws (another seed);
    at the t test's formula it would detect it less often at few pairs: the row would promise too much."""
    from scipy import stats

    mde = minimum_detectable_effect(1.0, n)
    assert simulated_power(mde, n, draws=40_000, seed=1) == pytest.approx(0.8, abs=0.015)
    t_formula = (stats.t.ppf(0.95, n - 1) + stats.t.ppf(0.8, n - 1)) / np.sqrt(n)
    assert mde > t_formula and simulated_power(t_formula, n, draws=40_000, seed=1) < 0.78


def test_holm_adjusts_step_down() -> None:
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm_adjusted([float("nan"), 0.01])[0]) and holm_adjusted([float("nan"), 0.01])[1] == 0.02


@pytest.mark.parametrize("n", [3, 5])
def test_null_suites_are_supported_at_most_at_the_stated_error_rate(n: int) -> None:
    """1000 suites of 6 claims with no true effect: the share of suites with any "supported" (the family-wise
    error Holm controls) stays at most alpha = 5% (plus 2 points of simulation noise, 3 standard errors)."""
    rng = np.random.default_rng(n)
    suites = 1000
    any_supported = 0
    for _ in range(suites):
        claims = [ClaimEvidence(rng.normal(0.0, 0.01, n), "better", 0.01) for _ in range(6)]
        any_supported += any(j.verdict == "supported" for j in judge_suite(claims))
    assert any_supported / suites <= 0.05 + 0.02


def plain_t_p(differences: np.ndarray) -> np.ndarray:
    """The one-sided paired t test's p-value of H0: mean <= 0 per row (what the verdicts used before)."""
    from scipy import stats

    n = differences.shape[1]
    return stats.t.sf(differences.mean(axis=1) / (differences.std(axis=1, ddof=1) / np.sqrt(n)), n - 1)


def test_one_sided_p_is_the_vectorised_skew_corrected_test_and_never_contradicts_the_interval() -> None:
    """The verdicts' p-value is `skew_corrected_p` (what the simulations below run), and a 95% skew-corrected
    interval above zero always comes with p < 0.05: the shown interval and the verdict agree."""
    rng = np.random.default_rng(3)
    for n in (3, 4, 5, 10):
        samples = 0.5 + rng.exponential(1.0, (4000, n)) * rng.choice([-1.0, 1.0], (4000, 1))
        p = skew_corrected_p(samples, 0.0)
        assert one_sided_p(samples[0], 0.0) == pytest.approx(p[0]) and one_sided_p(samples[1], 0.0) == pytest.approx(p[1])
        low, _ = skew_corrected_bounds(samples)
        assert (low > 0).any() and (p[low > 0] < 0.05).all()
    assert one_sided_p(np.array([0.01, 0.01, 0.01]), 0.0) == 0.0 and one_sided_p(np.array([0.0, 0.0]), 0.0) == 1.0


# With no true effect, differences skewed to the left (a method that now and then loses far more than usual:
# 1 - exponential) make any test from a few values say "supported" too often: the plain t test 16% at 3 and
# 5 seeds, 13% at 10. The verdicts' test (t and Hall's test both reject) measures these, which docs/claims.md
# states; it stays at most at 5% on normal differences at every level (Holm's and the sequential looks'
# small ones too, where Hall's test alone would not: 2x at n = 3), and pays in power on a normal 1-sd effect
# (the plain t test: 32%, 58%, 90%).
LEFT_SKEWED_NULL_RATE = {3: 0.102, 5: 0.092, 10: 0.077}
POWER_AT_ONE_SD = {3: 0.207, 5: 0.446, 10: 0.852}
NULL_DRAWS = 40_000  # standard error of a 5% rate: 0.11 points; of a 10% rate: 0.15 points


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_skew_corrected_test_keeps_normal_nulls_at_alpha_and_cuts_the_left_skewed_excess(n: int) -> None:
    rng = np.random.default_rng(500 + n)
    normal = skew_corrected_p(rng.normal(0.0, 1.0, (10 * NULL_DRAWS, n)), 0.0)
    assert float((normal <= 0.05).mean()) <= 0.05 and float((normal <= 0.05 / 6).mean()) <= 0.05 / 6
    right = rng.exponential(1.0, (NULL_DRAWS, n)) - 1.0  # skewed the other way: it errs on the safe side
    assert float((skew_corrected_p(right, 0.0) <= 0.05).mean()) <= 0.02
    left = 1.0 - rng.exponential(1.0, (NULL_DRAWS, n))
    corrected, plain = float((skew_corrected_p(left, 0.0) <= 0.05).mean()), float((plain_t_p(left) <= 0.05).mean())
    assert corrected == pytest.approx(LEFT_SKEWED_NULL_RATE[n], abs=0.01) and plain > corrected + 0.05
    effect = rng.normal(1.0, 1.0, (NULL_DRAWS, n))
    power = float((skew_corrected_p(effect, 0.0) <= 0.05).mean())
    assert power == pytest.approx(POWER_AT_ONE_SD[n], abs=0.015) and power < float((plain_t_p(effect) <= 0.05).mean())


def test_an_inconclusive_verdict_already_at_its_resolving_n_does_not_ask_for_that_n() -> None:
    """At 80% power a true effect the size of the MDE is missed one time in five: the reason must then say
    this n is already powered for it, never "n = 3 would resolve" at n = 3."""
    already = inconclusive_reason(0.5, 3, 1.0, 3, 0.8)
    assert "would resolve" not in already and "already has 80% power for 1, yet" in already
    assert inconclusive_reason(2.0, 3, 1.0, 7, 0.8).endswith("n = 7 would resolve 1")
    assert inconclusive_reason(2.0, 3, 1.0, None, 0.8).endswith("no affordable n resolves it")
    # and judge() says so on data whose MDE is below the needed margin but whose test did not decide
    rng = np.random.default_rng(4)
    for _ in range(400):
        data = rng.normal(0.6, 0.3, 4)
        judged = judge(data, kind="better", margin=1.0)
        if judged.verdict == "inconclusive" and judged.n_to_resolve is not None and judged.n_to_resolve <= 4:
            assert "would resolve" not in judged.reason and "already has 80% power" in judged.reason
            break
    else:
        raise AssertionError("no inconclusive verdict already at its resolving n in 400 draws")


def test_an_inconclusive_verdict_that_only_holm_withheld_says_so() -> None:
    data = [0.03, 0.05, 0.04, 0.06]
    alone = judge(data, kind="better", margin=0.0)
    assert alone.verdict == "supported"
    held = judge(data, kind="better", margin=0.0, adjusted_p=0.2)
    assert held.verdict == "inconclusive" and held.reason.startswith(f"p = {alone.p_value:.3g} alone, 0.2 after Holm")
    assert held.reason.endswith("more pairs would lower p")
