"""Judging the papers' claims: a pure function from one suite run's rows to a typed verdict per claim.

Beside the leaderboard, and like it free of I/O and rendering: the caller reads the store and the suite
copy the run wrote, and passes the claims the methods declare (`MethodInfo.claim`) and each dataset's
class count; `dashboards.claims` renders the records as docs/claims.md. For every method with a claim
and final runs beside the claim's baseline (`erm`, or the method the paper compared with), one record:
its mean and 95% bootstrap interval over seeds on the claimed metric, the paired difference with the
baseline (same seeds) and its interval, the budget the suite gave, and the verdict by `VERDICT_RULES`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from harness.columns import higher_is_better
from harness.leaderboard import phase_rows, seed_scores
from harness.method import Claim
from harness.protocols import DEFAULT_PROTOCOL
from harness.statistics import bootstrap_ci, paired_difference

# How a verdict follows from d = method - baseline paired by seed and [lo, hi] its 95% interval, signed so
# that up is good; docs/claims.md prints these lines under "Verdicts".
VERDICT_RULES = """\
- claim `better`:   holds if lo > 0; contradicted if hi < 0; else "not at this scale" (no detectable gain).
- claim `no_worse`: holds if lo >= -margin; contradicted if hi < -margin; else "not at this scale".
With three seeds the percentile bootstrap is optimistic (it cannot see beyond the three differences):
read "holds" as "consistent in every seed pair", not as a significance test.
Beside each verdict: the seeds of the method and of its baseline whose run ended at chance level (clean
test accuracy within 2 points of 1/classes, continual runs included), a diverged or collapsed run that a
mean alone would hide.
"""

Verdict = Literal["holds", "contradicted", "not at this scale", "not measured", "not run"]

JUDGED_PROTOCOL = DEFAULT_PROTOCOL  # claims are judged under the held-out protocol only
CHANCE_MARGIN = 0.02  # a run within 2 points of 1/classes ended at chance
CLEAN_ACCURACY = "test/accuracy"
# Shipped suites that run a method without measuring its claim: never named as the suite that would.
DEMO_SUITES = ("quickstart", "smoke", "battery", "reality_check")


@dataclass(frozen=True)
class TrainingLength:
    """A budget as the suite states it: epochs, or else steps."""

    epochs: float | None
    steps: int | None


@dataclass(frozen=True)
class Budget:
    """What a suite gave one benchmark: data, model, training length, tuning trials, seeds, scenario."""

    dataset: str
    model: str
    final: TrainingLength
    tuning: TrainingLength
    trials: int
    seeds: int
    scenario: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # non-empty blocks but `seed`


@dataclass(frozen=True)
class ClaimVerdict:
    """One method's claim judged on one benchmark of one suite run (or `not run`: no stored run has it)."""

    method: str  # as the suite labels it
    suite: str  # the suite that measured it, or would; "" when no shipped suite does
    benchmark: str
    claim: Claim
    mean: float
    ci: tuple[float, float]
    baseline_mean: float
    difference: float  # method - baseline, paired by seed
    difference_ci: tuple[float, float]
    seeds: int  # seed pairs the difference rests on
    budget: Budget | None
    verdict: Verdict
    at_chance: int = 0  # seeds whose accuracy ended at chance level (diverged or collapsed)
    baseline_at_chance: int = 0  # the same for the baseline's seeds: a collapsed baseline flatters the method


def verdict(claim: Claim, low: float, high: float) -> Verdict:
    """The verdict for a paired-difference interval [low, high] on the claim's metric (`VERDICT_RULES`)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "not measured"
    if not higher_is_better(claim.metric):
        low, high = -high, -low
    bar = 0.0 if claim.kind == "better" else -claim.margin
    if (low > bar) if claim.kind == "better" else (low >= bar):
        return "holds"
    if high < bar:
        return "contradicted"
    return "not at this scale"


def bench_name(bench: Mapping[str, Any]) -> str:
    return bench.get("name") or f"{bench['dataset']}-{bench['model']}"


def find_bench(suite: Mapping[str, Any], benchmark: str) -> Mapping[str, Any]:
    return next(bench for bench in suite["benchmarks"] if bench_name(bench) == benchmark)


def training_length(budget: Mapping[str, Any]) -> TrainingLength:
    return TrainingLength(epochs=budget.get("epochs"), steps=budget.get("steps"))


def suite_budget(suite: Mapping[str, Any], benchmark: str) -> Budget:
    """The budget a suite (as the plain data of its YAML) gave one benchmark, defaults filled in."""
    bench = find_bench(suite, benchmark)
    scenario = {key: value for key, value in (bench.get("scenario") or {}).items() if key != "seed" and value}
    return Budget(
        dataset=bench["dataset"], model=bench["model"], final=training_length(bench["budget"]),
        tuning=training_length(bench.get("tuning_budget") or bench["budget"]),
        trials=suite.get("tuning", {}).get("trials", 8),
        seeds=len(suite.get("final", {}).get("seeds", (0, 1, 2, 3, 4))), scenario=scenario,
    )


def seeds_at_chance(group: pd.DataFrame, method: str, bench: Mapping[str, Any], num_classes: Mapping[str, int]) -> int:
    """How many of `method`'s seeds ended with a clean test accuracy within `CHANCE_MARGIN` of 1/classes,
    whatever the claim's metric (a collapsed run is one, robust accuracy near chance is not). Continual runs
    count too: forgetting leaves accuracy near 1/tasks (the last task's classes), well above 1/classes, so a
    class-incremental seed at 1/classes collapsed (leaving them out hid collapsed erm seeds under er's claim)."""
    classes = num_classes.get(bench["dataset"])
    if CLEAN_ACCURACY not in group or classes is None:
        return 0
    scores = seed_scores(group, CLEAN_ACCURACY)
    if method not in scores:
        return 0
    return int((scores[method].dropna() <= 1.0 / classes + CHANCE_MARGIN).sum())


def judge_claims(
    rows: pd.DataFrame, suite: Mapping[str, Any], claims: Mapping[str, Claim], num_classes: Mapping[str, int]
) -> list[ClaimVerdict]:
    """A verdict per (benchmark, method with a claim) of one suite run, against its claim's baseline.

    `rows` are the run's store rows, `suite` the suite copy it wrote (plain data), `claims` method name ->
    its declared claim, `num_classes` dataset name -> classes (a dataset missing is never at chance).
    """
    final = phase_rows(rows, "final")
    if final.empty:
        return []
    names = {entry.get("label") or entry["name"]: entry["name"] for entry in suite["methods"]}
    ok = final[final["status"] == "ok"]
    out = []
    for (benchmark, protocol), group in ok.groupby(["benchmark", "protocol"], sort=True):
        if protocol != JUDGED_PROTOCOL:
            continue
        for label in sorted(set(group["method"])):
            claim = claims.get(names.get(label, label))
            if claim is None or claim.metric not in group or label == claim.baseline:
                continue
            scores = seed_scores(group, claim.metric)
            if claim.baseline not in scores or label not in scores:
                continue
            own, base = scores[label].dropna(), scores[claim.baseline].dropna()
            diff = paired_difference(own.to_dict(), base.to_dict())
            out.append(ClaimVerdict(
                method=label, suite=suite["name"], benchmark=str(benchmark), claim=claim, mean=float(own.mean()),
                ci=bootstrap_ci(own.to_numpy()), baseline_mean=float(base.mean()), difference=diff.mean,
                difference_ci=(diff.ci_low, diff.ci_high), seeds=diff.n_pairs,
                budget=suite_budget(suite, str(benchmark)), verdict=verdict(claim, diff.ci_low, diff.ci_high),
                at_chance=seeds_at_chance(group, label, find_bench(suite, str(benchmark)), num_classes),
                baseline_at_chance=seeds_at_chance(group, claim.baseline, find_bench(suite, str(benchmark)),
                                                   num_classes),
            ))
    return out


def unmeasured_claims(
    judged: Iterable[ClaimVerdict], claims: Mapping[str, Claim], suites: Sequence[Mapping[str, Any]]
) -> list[ClaimVerdict]:
    """A `not run` record for every claim (in `claims` order) that no judged run measured, naming the first
    of the shipped `suites` that runs its method (demo suites aside), so every claim gets a record."""
    measured = {record.method for record in judged}
    nan = float("nan")
    out = []
    for name, claim in claims.items():
        if name in measured:
            continue
        home = next((suite for suite in suites if name in {m["name"] for m in suite["methods"]}
                     and suite["name"] not in DEMO_SUITES), None)
        out.append(ClaimVerdict(
            method=name, suite=home["name"] if home else "", benchmark="", claim=claim, mean=nan, ci=(nan, nan),
            baseline_mean=nan, difference=nan, difference_ci=(nan, nan), seeds=0,
            budget=suite_budget(home, bench_name(home["benchmarks"][0])) if home else None, verdict="not run",
        ))
    return out
