"""The final runs' expected costs (`harness.final_costs`), which balance the final phase's groups: the
examples a run trains on, from its budget, times its method's declared cost factor."""

from __future__ import annotations

from pathlib import Path

from harness.final_costs import expected_cost, expected_examples
from harness.plan import plan_suite
from harness.suite import load_suite

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"


def test_a_runs_cost_is_its_epochs_times_the_training_examples_times_its_methods_cost_factor() -> None:
    suite = load_suite(SMOKE, ["final.seeds=[0]"])
    jobs = {job.cell.method.label: job for job in plan_suite(suite).final_jobs()}
    examples = {"digits": 1000}.__getitem__
    assert expected_examples(jobs["erm"], examples) == 4 * 1000  # smoke: 4 epochs
    assert expected_cost(jobs["erm"], examples) == 4 * 1000
    kd, pgd = jobs["kd"].cell.method_info.cost_factor, jobs["pgd_at"].cell.method_info.cost_factor
    assert kd > 1 and pgd > kd  # the factors the methods declare, so the ranking below means something
    assert expected_cost(jobs["kd"], examples) == 4 * 1000 * kd
    assert expected_cost(jobs["pgd_at"], examples) == 4 * 1000 * pgd


def test_a_budget_in_steps_counts_steps_times_the_batch_size() -> None:
    suite = load_suite(SMOKE, ["final.seeds=[0]", "methods=[{name: erm}]",
                               "benchmarks[0].budget={steps: 30}"])
    job = plan_suite(suite).final_jobs()[0]
    assert expected_examples(job, lambda dataset: 0) == 30 * 64  # smoke's batch size; the dataset size unused
