"""Sequential seeds (`final.seeds: {min, max}`): the looks and their levels, the rule that stops each
comparison, its error rate on simulated null suites (and that testing every look at full alpha would break
it), the suite key, the plan's jobs per look, the rows' `look`, and the claims judged look by look."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.claims import continuing_cells, judge_claims
from harness.method import Claim
from harness.sequential import SequentialSeeds, judge_sequential, look_levels, look_of, look_sizes
from harness.verdicts import ALPHA, ClaimEvidence, judge_suite

LOOKS = (3, 6, 9)


def test_looks_run_from_min_to_max_and_their_levels_spend_alpha() -> None:
    assert look_sizes(3, 9, 3) == (3, 6, 9) and look_sizes(3, 10, 3) == (3, 6, 9, 10) and look_sizes(3, 3, 3) == (3,)
    levels = look_levels(LOOKS)
    assert sum(levels) == pytest.approx(ALPHA) and all(0 < level < ALPHA for level in levels)
    assert look_levels((5,)) == pytest.approx((ALPHA,))  # one look: the plain test
    assert [look_of(LOOKS, i) for i in range(9)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    spec = SequentialSeeds(min=3, max=9)
    assert spec.seeds == tuple(range(9)) and spec.looks == LOOKS


def test_a_clear_effect_stops_at_the_first_look_and_a_small_one_gets_more_seeds() -> None:
    clear = ClaimEvidence([0.03, 0.031, 0.029, 0.03, 0.03, 0.03, 0.03, 0.03, 0.03], "better", 0.0)
    rng = np.random.default_rng(0)
    small = ClaimEvidence(0.01 + rng.normal(0.0, 0.008, 9), "better", 0.005)
    cut_short = ClaimEvidence(0.01 + rng.normal(0.0, 0.008, 3), "better", 0.005)  # its later seeds never ran
    first, second, third = judge_sequential([clear, small, cut_short], LOOKS)
    assert (first.judgement.verdict, first.look, first.seeds) == ("supported", 1, 3)
    assert second.look > 1 and second.seeds == LOOKS[second.look - 1]
    assert (third.look, third.seeds) == (1, 3)


def naive_supported(claims: list[ClaimEvidence]) -> bool:
    """Testing at full alpha at every look, stopping at the first "supported": what the rule must not do."""
    return any(j.verdict == "supported" for size in LOOKS
               for j in judge_suite([ClaimEvidence(c.differences[:size], c.kind, c.margin) for c in claims]))


def test_null_suites_stay_supported_at_most_at_alpha_under_the_sequential_rule() -> None:
    """400 suites of 3 claims with no true effect, 9 seeds each: the share with any "supported" stays <= 5%
    (+2 points, about 2 standard errors; measured 1.8-3.3%); the naive rule, full alpha at each look, exceeds it (measured 10-13%)."""
    rng = np.random.default_rng(7)
    suites, sequential, naive = 400, 0, 0
    for _ in range(suites):
        claims = [ClaimEvidence(rng.normal(0.0, 0.01, 9), "better", 0.002) for _ in range(3)]
        sequential += any(s.judgement.verdict == "supported" for s in judge_sequential(claims, LOOKS))
        naive += naive_supported(claims)
    assert sequential / suites <= ALPHA + 0.02
    assert naive / suites > ALPHA + 0.02 > sequential / suites


def test_the_suite_key_takes_min_max_and_keeps_the_list_form() -> None:
    from harness.errors import SuiteError
    from harness.suite import load_suite, validate_suite

    smoke = load_suite("suites/smoke.yaml")
    data = smoke.model_dump(mode="json")
    assert validate_suite(data).hash == smoke.hash  # the list form hashes as before
    data["final"]["seeds"] = {"min": 3, "max": 6}
    sequential = validate_suite(data)
    assert sequential.final.looks == (3, 6) and sequential.final.seed_order == tuple(range(6))
    assert sequential.hash != smoke.hash
    data["final"]["seeds"] = {"min": 5, "max": 3}
    with pytest.raises(SuiteError, match="final.seeds"):
        validate_suite(data)


def test_the_plan_gives_each_look_its_seeds_for_the_cells_still_open() -> None:
    from harness.plan import plan_suite
    from harness.suite import load_suite, validate_suite

    data = load_suite("suites/smoke.yaml").model_dump(mode="json")
    data["final"]["seeds"] = {"min": 2, "max": 4}
    plan = plan_suite(validate_suite(data))
    first = plan.look_jobs(1)
    assert {job.seed for job in first} == {0, 1} and len(first) == 2 * len(plan.cells)
    key = plan.cells[0].cell.key
    assert [(job.cell.key, job.seed) for job in plan.look_jobs(2, {key})] == [(key, 2), (key, 3)]


def test_final_rows_of_a_sequential_phase_say_their_look() -> None:
    from harness.plan import plan_suite
    from harness.row_builders import final_row
    from harness.suite import load_suite, validate_suite

    data = load_suite("suites/smoke.yaml").model_dump(mode="json")
    plain = plan_suite(validate_suite(data))
    assert final_row(validate_suite(data), plain.final_jobs()[0], None, started_at="t", error="x").look is None
    data["final"]["seeds"] = {"min": 2, "max": 4}
    suite = validate_suite(data)
    jobs = plan_suite(suite).look_jobs(2)
    assert final_row(suite, jobs[0], None, started_at="t", error="x").look == 2


SUITE = {"name": "toy", "benchmarks": [{"name": "b", "dataset": "ten", "model": "m", "budget": {"steps": 50}}],
         "methods": [{"name": "erm"}, {"name": "up"}, {"name": "maybe"}], "final": {"seeds": {"min": 3, "max": 9}}}
CLAIMS = {"up": Claim("gains"), "maybe": Claim("gains", margin=0.0)}


def rows(effects: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"phase": "final", "status": "ok", "benchmark": "b", "protocol": "holdout", "method": method,
                          "seed": seed, "test/accuracy": 0.5 + effect} for method, values in effects.items()
                         for seed, effect in enumerate(values)])


def test_claims_are_judged_look_by_look_and_the_open_ones_get_more_seeds() -> None:
    after_first = rows({"erm": [0.0] * 3, "up": [0.03, 0.031, 0.029], "maybe": [0.01, 0.002, 0.015]})
    judged = {r.method: r for r in judge_claims(after_first, SUITE, CLAIMS, {"ten": 10})}
    assert (judged["up"].verdict, judged["up"].look) == ("supported", 1)
    assert (judged["maybe"].verdict, judged["maybe"].look) == ("inconclusive", 1)
    assert continuing_cells(after_first, SUITE, CLAIMS, {"ten": 10}) == {"holdout:b:maybe", "holdout:b:erm"}
    # the next look ran maybe and erm on seeds 3-5 only: up stays decided at look 1, on its 3 seeds
    after_second = rows({"erm": [0.0] * 6, "up": [0.03, 0.031, 0.029],
                         "maybe": [0.01, 0.002, 0.015, 0.011, 0.009, 0.013]})
    judged = {r.method: r for r in judge_claims(after_second, SUITE, CLAIMS, {"ten": 10})}
    assert (judged["up"].look, judged["up"].seeds) == (1, 3) and judged["maybe"].look == 2
    plain = {**SUITE, "final": {"seeds": [0, 1, 2]}}
    assert continuing_cells(after_first, plain, CLAIMS, {"ten": 10}) == set()
    assert all(r.look is None for r in judge_claims(after_first, plain, CLAIMS, {"ten": 10}))


def test_the_claims_page_shows_the_look_and_the_sequential_budget() -> None:
    from dashboards.claims import budget_text, evidence_cell

    after_first = rows({"erm": [0.0] * 3, "up": [0.03, 0.031, 0.029], "maybe": [0.01, 0.002, 0.015]})
    up = next(r for r in judge_claims(after_first, SUITE, CLAIMS, {"ten": 10}) if r.method == "up")
    assert "3 x 1; stopped at look 1; " in evidence_cell(up)
    assert budget_text(up.budget).endswith("3-9 seeds, sequential")


class RowsStore:
    """The store the runner's look loop reads: the rows of the final runs "run" so far."""

    def __init__(self, effects: dict[str, list[float]]) -> None:
        self.effects, self.ran, self.consolidated = effects, [], False

    def read(self) -> pd.DataFrame:
        return pd.DataFrame([{"phase": "final", "status": "ok", "benchmark": "digits", "protocol": "holdout",
                              "method": key.split(":")[-1], "seed": seed,
                              "test/accuracy": 0.5 + self.effects[key.split(":")[-1]][seed]}
                             for key, seed in self.ran])

    def consolidate(self) -> None:
        self.consolidated = True


def test_the_runner_adds_a_looks_seeds_only_to_the_comparisons_still_open() -> None:
    """The look loop of SuiteRunner.run without Ray: label_smoothing is clearly better at look 1 and stops;
    hard_batch's gain is small and noisy, so it and erm get the next look's seeds (and then the last look's)."""
    from harness.plan import plan_suite
    from harness.runner import SuiteRunner
    from harness.suite import load_suite, validate_suite

    data = load_suite("suites/smoke.yaml").model_dump(mode="json")
    data["final"]["seeds"] = {"min": 3, "max": 9}
    data["methods"] = [{"name": "erm"}, {"name": "label_smoothing"}, {"name": "hard_batch"}]
    runner = object.__new__(SuiteRunner)
    runner.suite = validate_suite(data)
    runner.plan = plan_suite(runner.suite)
    runner.store = RowsStore({"erm": [0.0] * 9, "label_smoothing": [0.03, 0.031, 0.029] + [0.03] * 6,
                              "hard_batch": [0.01, 0.002, 0.015, 0.011, 0.004, 0.013, 0.006, 0.012, 0.009]})
    looks: list[list[tuple[str, int]]] = []

    def final_all(best: object, jobs: list) -> None:
        looks.append([(job.cell.method.label, job.seed) for job in jobs])
        runner.store.ran += [(job.cell.key, job.seed) for job in jobs]

    runner.tune_all, runner.final_all = lambda: {}, final_all
    runner.run()
    assert sorted(looks[0]) == sorted((m, s) for m in ("erm", "label_smoothing", "hard_batch") for s in range(3))
    assert sorted(looks[1]) == sorted((m, s) for m in ("erm", "hard_batch") for s in range(3, 6))
    assert runner.store.consolidated and all(method != "label_smoothing" for look in looks[1:] for method, _ in look)
