"""Judging the papers' claims: a pure function from one suite run's rows to a typed verdict per claim.

Beside the leaderboard, and like it free of I/O and rendering: the caller reads the store and the suite
copy the run wrote, and passes the claims the methods declare (`MethodInfo.claim`) and each dataset's
class count; `dashboards.claims` renders the records as docs/claims.md. For every method with a claim
and final runs beside the claim's baseline (`erm`, or the method the paper compared with), one record:
its mean and 95% skew-aware interval over seeds (`harness.statistics.skew_corrected_interval`) on the claimed metric, the paired difference with
the baseline (same seeds) and its interval, the gates, the budget the suite gave, and the verdict of
`harness.verdicts` (`VERDICT_RULES`), with its MDE and the n that would resolve it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pandas as pd

from harness.columns import higher_is_better
from harness.data import DATASETS
from harness.leaderboard import phase_rows, seed_scores, seeds_and_studies
from harness.method import METHODS, PLAIN_BASELINE, Claim
from harness.plugins import discover_methods
from harness.precondition_checks import ClaimRun, precondition_gates
from harness.protocols import DEFAULT_PROTOCOL
from harness.sequential import SequentialSeeds, judge_sequential, keeps_going
from harness.statistics import SKEW_T_INTERVAL, paired_t_difference, skew_corrected_interval
from harness.verdicts import (
    ClaimEvidence,
    Gate,
    Judgement,
    baseline_adequacy,
    judge_suite,
    no_seed_at_chance,
    tuning_health,
)

# How a verdict follows from the paired differences d = method - baseline (signed so that up is good), by
# `harness.verdicts`; docs/claims.md prints these lines under "Verdicts".
VERDICT_RULES = """\
- **not tested**: a gate failed (named): a seed of the method or of its baseline ended at chance (clean test
  accuracy within 2 points of 1/classes, continual runs included), the baseline fell short of the reference
  accuracy the benchmark declares (`reference_accuracy`), tuning was unhealthy (best trial at chance, or
  more than a third of trials failed or at chance), or a precondition the claim declares is absent (a
  teacher at least 3 points above the student, the large batch a large-batch fix needs, a baseline that
  began fitting the flipped labels under label noise, the paper's own baseline in the suite). Fewer than 2
  seed pairs is not tested either.
- **supported**: the one-sided paired test rejects "no gain" (`better`: d <= 0; `no_worse`: d <= -margin)
  at 5%, Holm-adjusted across the suite run's claims; the test rejects only where both the Student t test
  and Hall's skew-corrected t test do (p is the larger of the two).
- **not supported**: the opposite of the claim is shown at 5% (worse than the baseline; for `no_worse`, a
  loss beyond the margin), or TOST shows d within +-margin for a `better` claim with a margin.
- **inconclusive**: neither; the row gives the minimum detectable effect (MDE, one-sided 5%, power 80%) at
  this n and the n that would resolve the effect the claim needs (its margin, else the observed difference).
With sequential seeds (`final.seeds: {min, max}`) a comparison gets more seeds only while it is inconclusive
and more could resolve it; each look tests at its share of the 5% (Pocock-type alpha spending, union bound
over looks, `harness.sequential`; the MDE is at that look's level), and the row says at which look it
stopped. Its intervals are the plain 95% ones on the seeds it stopped at, not widened for the looks.
Intervals are 95%, of the mean and of the paired differences (the method is named in the table): from 4
seeds the hull of the Student t interval and Hall's skew-corrected t interval (his 1992 transformation of
the t statistic), whose bounds are where the verdicts' test reaches 2.5%, so an interval above 0 always
comes with p < 5%; at 3 seeds Hall's interval alone at a nominal 98.7%. Simulated in
`tests/test_statistics_coverage.py`, they cover 93-97% at 3, 5 and 10 seeds on normal, lognormal and
exponential seed-to-seed noise (at 3 seeds 96.9% on normal and 93.3% on exponential noise; no level of the
plain t interval reaches 93% on exponential noise while keeping normal noise at or below 97%); the
percentile bootstrap the page used before covered the mean only 75% of the time at 3 seeds. The verdicts'
false "supported" rate is at most 5% on normal differences at every level (Holm's and the sequential looks'
too), but it is higher on differences strongly skewed to the left (a method that
now and then loses far more than usual, 1 - exponential): measured 10%, 9% and 8% at 3, 5 and 10 seeds
(the plain t test: 16%, 16%, 13%); testing at the level that keeps it at 5% would leave the t test, Hall's
or this one 7-27% power on a normal 1-sd effect at 3 and 5 seeds (`bench/verdict_error_rates.py`). Read a "supported" resting on one far-off seed with that in mind. The
price of the skew correction is power: a normal 1-sd effect is detected 21%, 45% and 85% of the time at 3,
5 and 10 seeds (the t test: 32%, 58%, 90%; `tests/test_verdicts.py`). The MDE shown is this test's, from a
seeded simulation on normal differences below 30 pairs (1.8x, 1.35x and 1.05x the t test's at 3, 5 and 10).
"""

Verdict = Literal["supported", "not supported", "inconclusive", "not tested", "not measured", "not run"]

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
    seeds: int  # final seeds per comparison (a sequential phase's first look: `min`)
    scenario: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # non-empty blocks but `seed`
    max_seeds: int | None = None  # a sequential phase's `max` (None: every comparison gets `seeds`)


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
    seeds: int  # distinct seeds of the pairs the difference rests on (pairs: seeds x studies)
    budget: Budget | None
    verdict: Verdict
    at_chance: int = 0  # seeds whose accuracy ended at chance level (diverged or collapsed)
    baseline_at_chance: int = 0  # the same for the baseline's seeds: a collapsed baseline flatters the method
    gates: tuple[Gate, ...] = ()  # the conditions checked before judging; a failed one makes it "not tested"
    reason: str = ""  # why this verdict, in a few words (`harness.verdicts.Judgement.reason`)
    mde: float = float("nan")  # minimum detectable effect at this n (one-sided 5%, power 80%)
    n_to_resolve: int | None = None  # seed pairs that would resolve an inconclusive verdict
    studies: int = 1  # independent tuning studies per cell; n is seeds x studies
    interval_method: str = SKEW_T_INTERVAL
    look: int | None = None  # the look a sequential final phase stopped this comparison at (None: one look)


def declared_claims() -> dict[str, Claim]:
    """Method name -> the claim its class declares, in registry order (plugins included)."""
    discover_methods()
    return {name: METHODS.get(name).info.claim for name in METHODS.names() if METHODS.get(name).info.claim}


def dataset_classes() -> dict[str, int]:
    """Dataset name -> its number of classes (what "at chance" means for its runs)."""
    return {name: DATASETS.get(name).info.num_classes for name in DATASETS.names()}


def metric_number(value: float, metric: str) -> str:
    """A value as docs/claims.md prints it: accuracies in % with two decimals, other metrics (AURC, AUROC,
    bytes) to four significant digits; one home, so a verdict's reason uses the unit of its row."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value * 100.0:.2f}" if metric.endswith("accuracy") else f"{value:.4g}"


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
    seeds = suite.get("final", {}).get("seeds", (0, 1, 2, 3, 4))
    return Budget(
        dataset=bench["dataset"], model=bench["model"], final=training_length(bench["budget"]),
        tuning=training_length(bench.get("tuning_budget") or bench["budget"]),
        trials=suite.get("tuning", {}).get("trials", 8),
        seeds=len(seeds) if not isinstance(seeds, Mapping) else int(seeds["min"]), scenario=scenario,
        max_seeds=int(seeds["max"]) if isinstance(seeds, Mapping) else None,
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


def trial_scores(rows: pd.DataFrame, benchmark: str, protocol: str, method: str) -> list[float]:
    """The tuning trials' selection scores (`val/accuracy`, NaN for a failed trial) of one cell."""
    if "phase" not in rows or "val/accuracy" not in rows:
        return []
    cell = rows[(rows["phase"] == "tune") & (rows["benchmark"] == benchmark) & (rows["method"] == method)]
    if "protocol" in cell:
        cell = cell[cell["protocol"].isna() | (cell["protocol"] == protocol)]
    ok = cell["status"] == "ok" if "status" in cell else True
    return [float(v) if good else float("nan") for v, good in zip(cell["val/accuracy"], ok, strict=True)]


def recipe_adequacy(clean: pd.DataFrame, reference: float | None) -> Gate:
    """`reference_accuracy` is the clean accuracy the plain recipe reaches on the benchmark, so it is checked
    on the suite's `erm` (its mean clean test accuracy over `clean`'s seed columns), whichever baseline a
    claim names: an adversarially trained baseline (xat's pgd_at) gives clean accuracy away by design, and
    holding it to the plain recipe's reference would fail every such claim for the wrong reason."""
    if reference is not None and PLAIN_BASELINE not in clean:
        return Gate("baseline adequate", True, f"the suite runs no {PLAIN_BASELINE} to hold to the reference "
                    f"accuracy {reference:.4g}", checked=False)
    mean = float(clean[PLAIN_BASELINE].mean()) if PLAIN_BASELINE in clean else float("nan")
    return baseline_adequacy(mean, reference, baseline=PLAIN_BASELINE)


def claim_gates(
    rows: pd.DataFrame, group: pd.DataFrame, suite: Mapping[str, Any], label: str, claim: Claim,
    bench: Mapping[str, Any], protocol: str, num_classes: Mapping[str, int],
) -> tuple[Gate, ...]:
    """The gates a claim's evidence must pass: no seed at chance on either side, the plain recipe adequate
    against the benchmark's `reference_accuracy` (absent: not checked), healthy tuning of both sides, and the
    preconditions the claim declares (`harness.precondition_checks`)."""
    classes = num_classes.get(bench["dataset"])
    gates = [no_seed_at_chance(seeds_at_chance(group, label, bench, num_classes),
                               seeds_at_chance(group, claim.baseline, bench, num_classes))]
    if CLEAN_ACCURACY in group:
        gates.append(recipe_adequacy(seed_scores(group, CLEAN_ACCURACY), bench.get("reference_accuracy")))
    if classes is not None:
        for side in (label, claim.baseline):
            scores = trial_scores(rows, bench_name(bench), protocol, side)
            if scores:
                gate = tuning_health(scores, 1.0 / classes, CHANCE_MARGIN)
                gates.append(Gate(f"tuning healthy ({side})", gate.passed, gate.detail))
    run = ClaimRun(rows=rows, final=group, suite=suite, bench=bench, benchmark=bench_name(bench), label=label,
                   claim=claim, num_classes=classes)
    return (*gates, *precondition_gates(run))


@dataclass(frozen=True)
class Comparison:
    """One claim's evidence in one run: the method's and the baseline's per-seed scores and the gates."""

    label: str
    benchmark: str
    claim: Claim
    own: pd.Series  # seed -> score on the claim's metric
    base: pd.Series
    gates: tuple[Gate, ...]
    at_chance: int
    baseline_at_chance: int

    def first_seeds(self, limit: int | None) -> tuple[pd.Series, pd.Series]:
        """Both sides on their first `limit` shared seeds (in seed order; None: every seed of each side)."""
        if limit is None:
            return self.own, self.base
        shared = [seed for seed in self.own.index if seed in self.base.index][:limit]
        return self.own[shared], self.base[shared]

    def evidence(self) -> ClaimEvidence:
        """The paired differences signed so that up is good, in seed order, with the gates."""
        sign = 1.0 if higher_is_better(self.claim.metric) else -1.0
        diff = paired_t_difference(self.own.to_dict(), self.base.to_dict())
        return ClaimEvidence(sign * diff.differences, self.claim.kind, self.claim.margin, self.gates,
                             show=lambda value, metric=self.claim.metric: metric_number(value, metric))


def comparisons(
    rows: pd.DataFrame, suite: Mapping[str, Any], claims: Mapping[str, Claim], num_classes: Mapping[str, int]
) -> list[Comparison]:
    """Every (benchmark, method with a claim) of the run with final runs on both sides, held-out protocol."""
    final = phase_rows(rows, "final")
    if final.empty:
        return []
    names = {entry.get("label") or entry["name"]: entry["name"] for entry in suite["methods"]}
    ok = final[final["status"] == "ok"]
    found = []
    for (benchmark, protocol), group in ok.groupby(["benchmark", "protocol"], sort=True):
        if protocol != JUDGED_PROTOCOL:
            continue
        bench = find_bench(suite, str(benchmark))
        for label in sorted(set(group["method"])):
            claim = claims.get(names.get(label, label))
            if claim is None or claim.metric not in group or label == claim.baseline:
                continue
            scores = seed_scores(group, claim.metric)
            if claim.baseline not in scores or label not in scores:
                continue
            found.append(Comparison(
                label=label, benchmark=str(benchmark), claim=claim, own=scores[label].dropna(),
                base=scores[claim.baseline].dropna(),
                gates=claim_gates(rows, group, suite, label, claim, bench, str(protocol), num_classes),
                at_chance=seeds_at_chance(group, label, bench, num_classes),
                baseline_at_chance=seeds_at_chance(group, claim.baseline, bench, num_classes)))
    return found


def sequential_looks(suite: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The looks of a sequential final phase (`final.seeds: {min, max}`), None for a list of seeds."""
    seeds = suite.get("final", {}).get("seeds")
    return SequentialSeeds(**seeds).looks if isinstance(seeds, Mapping) else None


def judge_claims(
    rows: pd.DataFrame, suite: Mapping[str, Any], claims: Mapping[str, Claim], num_classes: Mapping[str, int]
) -> list[ClaimVerdict]:
    """A verdict per (benchmark, method with a claim) of one suite run, against its claim's baseline.

    `rows` are the run's store rows, `suite` the suite copy it wrote (plain data), `claims` method name ->
    its declared claim, `num_classes` dataset name -> classes (a dataset missing is never at chance). The
    run's claims are judged together (`harness.verdicts.judge_suite`: Holm across them); with a sequential
    final phase look by look (`harness.sequential.judge_sequential`), each on the seeds it had at its look.
    """
    found = comparisons(rows, suite, claims, num_classes)
    evidence = [comparison.evidence() for comparison in found]
    looks = sequential_looks(suite)
    if looks is None:
        outcomes = [(judged, None, None) for judged in judge_suite(evidence)]
    else:
        outcomes = [(s.judgement, s.look, s.seeds) for s in judge_sequential(evidence, looks)]
    return [with_judgement(record(comparison, suite, seeds), judged, look)
            for comparison, (judged, look, seeds) in zip(found, outcomes, strict=True)]


def record(comparison: Comparison, suite: Mapping[str, Any], seeds: int | None) -> ClaimVerdict:
    """The claim's record on its first `seeds` shared seeds (None: all): means, intervals, budget, gates."""
    own, base = comparison.first_seeds(seeds)
    diff = paired_t_difference(own.to_dict(), base.to_dict(), interval=skew_corrected_interval)
    n_seeds, n_studies = seeds_and_studies(key for key in own.index if key in base.index)  # (study, seed) pairs
    return ClaimVerdict(
        method=comparison.label, suite=suite["name"], benchmark=comparison.benchmark, claim=comparison.claim,
        mean=float(own.mean()), ci=skew_corrected_interval(own.to_numpy())[:2], baseline_mean=float(base.mean()),
        difference=diff.mean, difference_ci=diff.interval[:2], seeds=n_seeds if diff.n_pairs else 0, studies=n_studies,
        budget=suite_budget(suite, comparison.benchmark), verdict="not measured", at_chance=comparison.at_chance,
        baseline_at_chance=comparison.baseline_at_chance, gates=comparison.gates,
        interval_method=diff.interval.method)


def with_judgement(record: ClaimVerdict, judged: Judgement, look: int | None = None) -> ClaimVerdict:
    """The record with its verdict and what explains it (and the look it stopped at, when sequential); a
    claim whose metric was never measured (no seed pair) stays "not measured"."""
    verdict: Verdict = "not measured" if record.seeds == 0 else judged.verdict
    return replace(record, verdict=verdict, reason=judged.reason, mde=judged.mde, n_to_resolve=judged.n_to_resolve,
                   look=look)


def continuing_cells(
    rows: pd.DataFrame, suite: Mapping[str, Any], claims: Mapping[str, Claim], num_classes: Mapping[str, int],
) -> set[str]:
    """Cell keys (`protocol:benchmark:label`) of both sides of every claim a sequential final phase has not
    stopped: the runs the next look adds seeds to (`harness.runner`). Empty without a sequential plan."""
    looks = sequential_looks(suite)
    if looks is None:
        return set()
    found = comparisons(rows, suite, claims, num_classes)
    judged = judge_sequential([comparison.evidence() for comparison in found], looks)
    keys = set()
    for comparison, outcome in zip(found, judged, strict=True):
        if keeps_going(outcome.judgement, outcome.look, looks):
            for side in (comparison.label, comparison.claim.baseline):
                keys.add(f"{JUDGED_PROTOCOL}:{comparison.benchmark}:{side}")
    return keys


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


@dataclass(frozen=True)
class BudgetPoint:
    """One claim judged at one training budget: the verdict, the paired difference (up is good) and its interval."""

    budget: TrainingLength
    verdict: Verdict
    effect: float
    effect_ci: tuple[float, float]
    seeds: int


@dataclass(frozen=True)
class BudgetCurve:
    """A claim judged at several budgets of the same suite (`python -m harness.sweep`), smallest first,
    and its trend in words: whether the verdict survives the larger budgets and where the effect goes."""

    suite: str
    method: str
    benchmark: str
    claim: Claim
    points: tuple[BudgetPoint, ...]
    trend: str


def _length_key(length: TrainingLength) -> tuple[int, float]:
    return (0, float(length.epochs)) if length.epochs is not None else (1, float(length.steps or 0))


def budget_trend(points: Sequence[BudgetPoint]) -> str:
    """The verdicts' survival from the smallest budget to the largest, and the point estimates' direction
    (a description of the estimates, not a test of a trend)."""
    verdicts = [point.verdict for point in points]
    first, last = points[0], points[-1]
    if all(verdict == "supported" for verdict in verdicts):
        survival = "supported at every budget"
    elif verdicts[0] == "supported":
        survival = f"supported at the smallest budget, {verdicts[-1]} at the largest"
    elif verdicts[-1] == "supported":
        survival = f"{verdicts[0]} at the smallest budget, supported at the largest"
    else:
        survival = "not supported at any budget" if set(verdicts) == {"not supported"} else "never supported"
    if not (math.isfinite(first.effect) and math.isfinite(last.effect)):
        return survival
    direction = "rises" if last.effect > first.effect else "falls" if last.effect < first.effect else "stays"
    sign_change = first.effect * last.effect < 0
    return f"{survival}; the effect {direction} with budget" + (", changing sign" if sign_change else "")


def budget_curves(records: Iterable[ClaimVerdict]) -> list[BudgetCurve]:
    """Per (suite, benchmark, method): its records at two or more distinct final budgets, as a curve. At a
    budget measured twice the record with more seed pairs counts."""
    groups: dict[tuple[str, str, str], dict[TrainingLength, ClaimVerdict]] = {}
    for row in records:
        if row.budget is None or row.seeds == 0:
            continue
        at = groups.setdefault((row.suite, row.benchmark, row.method), {})
        if row.budget.final not in at or row.seeds > at[row.budget.final].seeds:
            at[row.budget.final] = row
    curves = []
    for (suite, benchmark, method), at in sorted(groups.items()):
        if len(at) < 2:
            continue
        rows = [at[length] for length in sorted(at, key=_length_key)]
        sign = 1.0 if higher_is_better(rows[0].claim.metric) else -1.0
        points = tuple(BudgetPoint(row.budget.final, row.verdict, sign * row.difference,  # type: ignore[union-attr]
                                   tuple(sorted((sign * row.difference_ci[0], sign * row.difference_ci[1]))),
                                   row.seeds) for row in rows)
        curves.append(BudgetCurve(suite, method, benchmark, rows[0].claim, points, budget_trend(points)))
    return curves
