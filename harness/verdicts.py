"""Four verdicts that say no more than the evidence: supported, not supported, inconclusive, not tested.

A pure function of one claim's paired differences (method - baseline, signed so that up is good), the
effect the claim needs (`margin`), and the gates its runs passed; numpy and scipy only, no I/O.

- *not tested*: a gate failed (the baseline is inadequate, tuning was unhealthy, a precondition of the
  claim is absent, a seed of either side ended at chance); the failed gates are named.
- *supported*: the one-sided paired test (both the t test and Hall's skew-corrected t test reject;
  `one_sided_p`) rejects "no gain" (`better`: d <= 0; `no_worse`: d <= -margin) at `alpha`, after Holm's
  correction across the suite's claims (`holm`).
- *not supported*: TOST shows the difference lies within +-margin (`better`: no gain as large as the margin),
  or the one-sided test shows the opposite of the claim (worse than baseline; for `no_worse`, a loss
  beyond the margin).
- *inconclusive*: neither; the row shows the minimum detectable effect at this n and the n that would
  resolve it at `power`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from harness.statistics import finite, hall_terms, skew_corrected_p, skew_corrected_p_of

Verdict = Literal["supported", "not supported", "inconclusive", "not tested"]
ALPHA = 0.05  # family-wise error rate of "supported" across one suite's claims (Holm)
POWER = 0.8
MAX_RESOLVING_N = 1000  # beyond this, "more seeds" is no answer: the MDE is reported as unresolvable


def plain_number(value: float) -> str:
    """An effect in the metric's own units, three significant digits (the default of a verdict's reason)."""
    return f"{value:.3g}"


@dataclass(frozen=True)
class Gate:
    """One condition the evidence needs before any verdict: its name, whether it held, and why.

    A gate nothing declares the means to check (`checked=False`) does not block a verdict, but it is never
    reported as passed: readers see it listed as not checked."""

    name: str
    passed: bool
    detail: str = ""
    checked: bool = True


@dataclass(frozen=True)
class Judgement:
    """A verdict and what explains it: the p-value of the claim's test, the MDE at this n, the n to resolve."""

    verdict: Verdict
    reason: str
    p_value: float
    mde: float
    n: int
    n_to_resolve: int | None  # None: already resolved, or no n up to MAX_RESOLVING_N would
    failed_gates: tuple[str, ...] = ()


def one_sided_p(differences: np.ndarray, bar: float) -> float:
    """p-value of the one-sided test of H0: mean <= bar against mean > bar (NaN for n < 2): the larger of the
    t test's and Hall's skew-corrected t test's (`harness.statistics.skew_corrected_p`, whose bounds make the
    interval the claims page shows), so "supported", TOST and the sequential looks all rest on one test,
    which never contradicts the interval."""
    return float(skew_corrected_p(np.asarray(differences, dtype=float)[None, :], bar)[0])


def tost_p(differences: np.ndarray, margin: float) -> float:
    """TOST p-value for equivalence within (-margin, margin): the larger of the two one-sided p-values."""
    if margin <= 0:
        return 1.0  # no equivalence region: equivalence is never shown
    return max(one_sided_p(differences, -margin), one_sided_p(-differences, -margin))


SIMULATED_MDE_BELOW = 30  # from this n on, the t test's formula (Hall's correction shrinks as 1 / sqrt(n))
MDE_DRAWS = 4000  # normal samples per n of the seeded power simulation: about 1% of the MDE's noise


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference the verdicts' one-sided test at `alpha` (`one_sided_p`) detects
    with `power` at n pairs of normal differences of standard deviation `sd`. Below `SIMULATED_MDE_BELOW`
    pairs it comes from a seeded simulation of that very test (it needs up to a third more than the t
    test at 3 to 5 pairs); from there on from the t test's (t(1-alpha) + t(power)) * sd / sqrt(n)."""
    if n < 2 or not math.isfinite(sd):
        return float("inf")
    if n <= MAX_RESOLVING_N:
        return float(_mde_per_unit_sd(alpha, power)[n - 2] * sd)
    return float((stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def n_to_resolve(sd: float, effect: float, *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest pairs whose MDE reaches `effect`, or None when none up to MAX_RESOLVING_N does."""
    if effect <= 0 or not math.isfinite(sd):
        return None
    n = np.arange(2, MAX_RESOLVING_N + 1)
    reached = np.flatnonzero(_mde_per_unit_sd(alpha, power) * sd <= effect)
    return int(n[reached[0]]) if len(reached) else None


def simulated_power(effect: float, n: int, *, alpha: float = ALPHA, draws: int = MDE_DRAWS, seed: int = 0) -> float:
    """The share of `draws` seeded samples of n normal differences (sd 1, mean `effect`) that the verdicts'
    one-sided test calls a gain at `alpha`."""
    return float(_power_curve(n, alpha, draws, seed)(effect))


def _power_curve(n: int, alpha: float, draws: int = MDE_DRAWS, seed: int = 0) -> Callable[[float], float]:
    """Power as a function of the effect, on one fixed set of seeded normal samples (shifted, not redrawn)."""
    terms = hall_terms(np.random.default_rng((seed, n)).normal(0.0, 1.0, (draws, n)))
    return lambda effect: float((skew_corrected_p_of(terms._replace(mean=terms.mean + effect), n, 0.0) <= alpha).mean())


def _simulated_mde(n: int, alpha: float, power: float) -> float:
    """The effect (in sd) at which `simulated_power` reaches `power`, by bisection (power grows with it)."""
    curve = _power_curve(n, alpha)
    low, high = 0.0, 4.0 * (stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(power, n - 1)) / math.sqrt(n)
    for _ in range(14):
        middle = (low + high) / 2.0
        low, high = (low, middle) if curve(middle) >= power else (middle, high)
    return high


@functools.lru_cache(maxsize=64)
def _mde_per_unit_sd(alpha: float, power: float) -> np.ndarray:
    """`minimum_detectable_effect` at sd = 1 for n = 2 .. MAX_RESOLVING_N (computed once per level)."""
    n = np.arange(2, MAX_RESOLVING_N + 1)
    mde = (stats.t.ppf(1 - alpha, n - 1) + stats.t.ppf(power, n - 1)) / np.sqrt(n)
    for size in range(3, SIMULATED_MDE_BELOW):  # n = 2: no skewness, the test is the t test
        mde[size - 2] = _simulated_mde(size, alpha, power)
    return mde


def judge(
    differences: Sequence[float] | np.ndarray, *, kind: Literal["better", "no_worse"], margin: float,
    gates: Sequence[Gate] = (), alpha: float = ALPHA, power: float = POWER, adjusted_p: float | None = None,
    show: Callable[[float], str] = plain_number,
) -> Judgement:
    """The verdict for paired differences (up is good) against a claim of `kind` with its `margin`.

    `adjusted_p` is this claim's Holm-adjusted p-value within its suite (`judge_suite`; None: judged alone)
    and decides "supported" against `alpha`; `margin`
    is, for `better`, the smallest gain the claim needs (the equivalence bound of TOST), for `no_worse`
    the largest loss in line with it. `show` writes an effect (margin, MDE) in the unit the caller's table
    uses (docs/claims.md: accuracy points), so the reason and the row never disagree.
    """
    data = finite(differences)
    n = len(data)
    failed = tuple(gate.name for gate in gates if not gate.passed)
    sd = float(data.std(ddof=1)) if n > 1 else float("nan")
    mde = minimum_detectable_effect(sd, n, alpha=alpha, power=power)
    bar = 0.0 if kind == "better" else -margin
    p = one_sided_p(data, bar)
    if failed:
        return Judgement("not tested", "failed gate: " + ", ".join(failed), p, mde, n, None, failed)
    if n < 2:
        return Judgement("not tested", f"{n} seed pair(s): a paired test needs at least 2", p, mde, n, None)
    decisive = p if adjusted_p is None else adjusted_p
    if decisive <= alpha:
        return Judgement("supported", f"one-sided p (t and Hall) = {decisive:.3g} <= {alpha:.3g}"
                         + (" (Holm)" if adjusted_p is not None else ""), p, mde, n, None)
    opposite = one_sided_p(-data, -bar)  # H0: mean >= bar, i.e. the claim's direction
    if opposite <= alpha:
        return Judgement("not supported", f"the opposite of the claim holds (p = {opposite:.3g})", p, mde, n, None)
    if kind == "better" and tost_p(data, margin) <= alpha:
        return Judgement("not supported", f"TOST: the difference lies within +-{show(margin)}", p, mde, n, None)
    needed = margin if kind == "better" and margin > 0 else abs(float(data.mean()) - bar)
    resolve = n_to_resolve(sd, needed, alpha=alpha, power=power)
    if adjusted_p is not None and p <= alpha:  # the MDE is one claim's: Holm across the suite asks more
        reason = (f"p = {p:.3g} alone, {adjusted_p:.3g} after Holm across the suite's claims, above {alpha:.3g}; "
                  f"MDE {show(mde)} at n = {n}: more pairs would lower p")
    else:
        reason = inconclusive_reason(mde, n, needed, resolve, power, show)
    return Judgement("inconclusive", reason, p, mde, n, resolve)


def inconclusive_reason(mde: float, n: int, needed: float, resolve: int | None, power: float,
                        show: Callable[[float], str] = plain_number) -> str:
    """Why an inconclusive verdict is one, and what more pairs would buy. The MDE is a power statement: at
    n >= `resolve` an effect of `needed` is found with probability `power`, so an inconclusive verdict can
    already be at that n (the other 1 - power); saying "n = 3 would resolve it" at n = 3 would then be false."""
    head = f"MDE {show(mde)} at n = {n}; "
    if resolve is None:
        return head + "no affordable n resolves it"
    if resolve > n:
        return head + f"n = {resolve} would resolve {show(needed)}"
    return head + f"this n already has {power:.0%} power for {show(needed)}, yet the test did not decide: more pairs would settle it"


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: rejecting where adjusted p <= alpha keeps the family-wise rate of
    false "supported" across a suite's claims at alpha. The i-th smallest of m gets max over j <= i of
    (m - j) * p_(j), capped at 1; NaN stays NaN and counts in m (an untested claim still was a claim)."""
    m = len(p_values)
    order = sorted((i for i in range(m) if math.isfinite(p_values[i])), key=lambda i: p_values[i])
    adjusted = [float("nan")] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class ClaimEvidence:
    """What `judge_suite` needs of one claim: paired differences (up is good), kind, margin and gates."""

    differences: Sequence[float]
    kind: Literal["better", "no_worse"]
    margin: float
    gates: Sequence[Gate] = ()
    show: Callable[[float], str] = plain_number  # an effect in the unit of the caller's table


def judge_suite(
    claims: Sequence[ClaimEvidence], *, alpha: float = ALPHA, power: float = POWER, family_size: int | None = None,
) -> list[Judgement]:
    """A judgement per claim of one suite, "supported" decided on Holm-adjusted p-values across them.

    `family_size` counts claims beyond these in Holm's family (already decided at an earlier look of a
    sequential phase, `harness.sequential`): they are never rejected here, but they still count in m."""
    raw = [one_sided_p(finite(c.differences), 0.0 if c.kind == "better" else -c.margin) for c in claims]
    decided = max(0, (family_size or len(claims)) - len(claims))
    adjusted = holm_adjusted(raw + [float("nan")] * decided)[:len(claims)]
    return [judge(c.differences, kind=c.kind, margin=c.margin, gates=c.gates, alpha=alpha, power=power,
                  adjusted_p=q, show=c.show) for c, q in zip(claims, adjusted, strict=True)]


def baseline_adequacy(baseline_mean: float, reference: float | None, tolerance: float = 0.02,
                      baseline: str = "baseline") -> Gate:
    """The baseline (named `baseline` in the detail) reaches the reference accuracy the benchmark declares,
    less `tolerance` (absent: not checked, so the verdict does not claim the baseline was adequate)."""
    if reference is None:
        return Gate("baseline adequate", True, "the benchmark declares no reference_accuracy", checked=False)
    ok = math.isfinite(baseline_mean) and baseline_mean >= reference - tolerance
    return Gate("baseline adequate", ok, f"{baseline} {baseline_mean:.4g} vs reference {reference:.4g}")


def tuning_health(trial_scores: Sequence[float], chance: float, margin: float = 0.02) -> Gate:
    """Tuning was healthy: the best trial is above chance and at most a third of trials failed (NaN) or
    ended at chance (within `margin` of it)."""
    scores = np.asarray(trial_scores, dtype=float)
    bad = int((~np.isfinite(scores)).sum() + (np.isfinite(scores) & (scores <= chance + margin)).sum())
    best = float(np.nanmax(scores)) if np.isfinite(scores).any() else float("nan")
    ok = len(scores) > 0 and math.isfinite(best) and best > chance + margin and 3 * bad <= len(scores)
    return Gate("tuning healthy", ok, f"best trial {best:.4g}, {bad} of {len(scores)} failed or at chance")


def no_seed_at_chance(method_at_chance: int, baseline_at_chance: int) -> Gate:
    """No seed of either side ended at chance (a collapsed run is no evidence for or against the claim)."""
    ok = method_at_chance == 0 and baseline_at_chance == 0
    return Gate("no seed at chance", ok, f"method {method_at_chance}, baseline {baseline_at_chance} runs at chance")


def precondition(name: str, measured: float, required: float) -> Gate:
    """A claim's declared precondition, e.g. "teacher margin" (teacher - student >= 0.03) or "batch size"
    for ghost_bn (>= 1024): holds when `measured` reaches `required`."""
    ok = math.isfinite(measured) and measured >= required
    return Gate(name, ok, f"{measured:g} vs required {required:g}")
