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

from pydantic import Field, model_validator

from harness.schema import Strict
from harness.statistics import finite
from harness.verdicts import ALPHA, POWER, ClaimEvidence, Judgement, judge_suite


class SequentialSeeds(Strict):
    """`final.seeds` as a group-sequential plan: seeds 0 .. max - 1, looked at every `step` from `min`."""

    min: int = Field(..., ge=2, description="seeds every comparison gets before its first look")
    max: int = Field(..., ge=2, description="the most seeds a comparison gets")
    step: int | None = Field(None, ge=1, description="seeds added per look (default: min)")

    @model_validator(mode="after")
    def _ordered(self) -> SequentialSeeds:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        return self

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every seed a comparison may get, in the order they are added."""
        return tuple(range(self.max))

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds per comparison at each look: min, min + step, ..., max (the last look is always max)."""
        return look_sizes(self.min, self.max, self.step or self.min)


def look_sizes(first: int, last: int, step: int) -> tuple[int, ...]:
    """min, min + step, ... up to `last`, with `last` itself the final look."""
    sizes = list(range(first, last, step)) + [last]
    return tuple(sorted(set(sizes)))


def look_of(looks: Sequence[int], seed_index: int) -> int:
    """The look (1-based) at which the seed at position `seed_index` of the seed order is added."""
    return next(k for k, size in enumerate(looks, start=1) if seed_index < size)


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
