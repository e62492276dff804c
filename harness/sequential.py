"""Seeds where the evidence is thin: a group-sequential final phase that keeps the stated error rates.

`final.seeds: {min: 3, max: 9}` runs `min` seeds per comparison, judges every claim, and adds seeds (`step`
at a time, `min` by default) only to comparisons still inconclusive that more seeds could resolve, up to
`max`. Looking at the data several times inflates the error rate of "supported" unless each look tests at a
smaller level: the levels here come from the Lan-DeMets spending function of Pocock's type,
alpha * ln(1 + (e - 1) * t) at information fraction t = n / max, and look k tests at the increment
spent since look k - 1. By the union bound over looks (and Holm over the suite's claims at each look, with
the claims already decided kept in the family), the chance of any false "supported" stays <= alpha, for
the verdicts' test (never above the t test's rate) at any n, on normal differences; an exact
group-sequential boundary would be less conservative, and needs the normal approximation that three seeds
do not give. The same holds for "not supported". Pure: the runner
(`harness.runner`) and the claims page replay the same rule on the same rows, so they agree on each
comparison's look.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from harness.seed_plan import SequentialSeeds, look_of, look_sizes
from harness.statistics import finite
from harness.verdicts import ALPHA, POWER, ClaimEvidence, Judgement, judge_suite

__all__ = ["SequentialSeeds", "judge_sequential", "keeps_going", "look_levels", "look_of", "look_sizes"]


def spent(alpha: float, fraction: float) -> float:
    """Pocock-type alpha spending (Lan and DeMets 1983): alpha * ln(1 + (e - 1) * t), alpha at t = 1."""
    return alpha * math.log(1.0 + (math.e - 1.0) * min(max(fraction, 0.0), 1.0))


def look_levels(looks: Sequence[int], alpha: float = ALPHA) -> tuple[float, ...]:
    """Each look's test level: the alpha spent since the previous look (they sum to alpha)."""
    fractions = [size / looks[-1] for size in looks]
    spent_so_far = [spent(alpha, t) for t in fractions]
    return tuple(b - a for a, b in zip([0.0, *spent_so_far[:-1]], spent_so_far, strict=True))


@dataclass(frozen=True)
class SequentialJudgement:
    """A claim's judgement at the look its comparison stopped (1-based), and the seeds it stopped at."""

    judgement: Judgement
    look: int
    seeds: int


def keeps_going(judgement: Judgement, look: int, looks: Sequence[int]) -> bool:
    """More seeds could resolve it: inconclusive, not the last look, and some n up to max would."""
    resolvable = judgement.n_to_resolve is not None and judgement.n_to_resolve <= looks[-1]
    return judgement.verdict == "inconclusive" and look < len(looks) and resolvable


def judge_sequential(
    claims: Sequence[ClaimEvidence], looks: Sequence[int], *, alpha: float = ALPHA, power: float = POWER
) -> list[SequentialJudgement]:
    """Each claim judged look by look on its first `looks[k]` differences (in seed order) until it stops.

    A claim whose differences run out before a look (its comparison was stopped, or runs failed) stops at
    the last look it had data for. At each look the open claims are judged at that look's level, Holm over
    all the suite's claims (decided ones count in the family but are never re-tested)."""
    levels = look_levels(looks, alpha)
    data = [finite(claim.differences) for claim in claims]
    stopped: dict[int, SequentialJudgement] = {}
    latest: dict[int, SequentialJudgement] = {}
    for look, (size, level) in enumerate(zip(looks, levels, strict=True), start=1):
        for i in range(len(claims)):  # a claim without data for this look stops at its last one
            if i not in stopped and look > 1 and len(data[i]) < size:
                stopped[i] = latest[i]
        open_claims = [i for i in range(len(claims)) if i not in stopped]
        if not open_claims:
            break
        family = [ClaimEvidence(data[i][:size], claims[i].kind, claims[i].margin, claims[i].gates, claims[i].show)
                  for i in open_claims]
        judged = judge_suite(family, alpha=level, power=power, family_size=len(claims))
        for i, judgement in zip(open_claims, judged, strict=True):
            latest[i] = SequentialJudgement(judgement, look, min(size, len(data[i])))
            if not keeps_going(judgement, look, looks):
                stopped[i] = latest[i]
    assert len(stopped) == len(claims), "every claim stops by the last look"
    return [stopped[i] for i in range(len(claims))]
