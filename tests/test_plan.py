"""The plan of a suite, without Ray: its cells in suite order, their search spaces and first trials,
its final runs, and the named seeds."""

from __future__ import annotations

from pathlib import Path

from harness.plan import Cell, FinalJob, Seeds, plan_suite, suite_cells
from harness.suite import load_suite

SUITES = Path(__file__).resolve().parent.parent / "suites"
SMOKE = SUITES / "smoke.yaml"


def test_cells_are_benchmark_by_protocol_by_method_in_suite_order() -> None:
    suite = load_suite(SMOKE, ["methods=[{name: erm}, {name: label_smoothing}]", "protocols=[holdout, oracle]",
                               "allow_oracle=true"])
    keys = [cell.key for cell in suite_cells(suite)]
    bench = suite.benchmarks[0].name
    assert keys == [f"holdout:{bench}:erm", f"holdout:{bench}:label_smoothing",
                    f"oracle:{bench}:erm", f"oracle:{bench}:label_smoothing"]


def test_each_cell_plan_carries_its_flat_space_and_no_first_trial_by_default() -> None:
    suite = load_suite(SMOKE, ["methods=[{name: erm}, {name: label_smoothing}]"])
    plans = {plan.cell.method.name: plan for plan in plan_suite(suite).cells}
    assert set(plans["erm"].space) == {f"train.{key}" for key in suite.tuning.engine_space}
    assert "method.smoothing" in plans["label_smoothing"].space
    assert all(plan.first_trial is None for plan in plans.values())


def test_start_from_defaults_queues_the_default_point_first() -> None:
    suite = load_suite(SMOKE, ["methods=[{name: label_smoothing, config: {smoothing: 0.1}}]",
                               "tuning.start_from_defaults=true"])
    (plan,) = plan_suite(suite).cells
    assert plan.first_trial == {"train.lr": 0.05, "train.weight_decay": 0.0005, "method.smoothing": 0.1}


def test_final_jobs_go_cell_by_cell_with_every_seed() -> None:
    suite = load_suite(SMOKE, ["methods=[{name: erm}, {name: label_smoothing}]", "final.seeds=[3, 1]"])
    plan = plan_suite(suite)
    erm, smoothing = (p.cell for p in plan.cells)
    assert plan.final_jobs() == [FinalJob(erm, 3), FinalJob(erm, 1), FinalJob(smoothing, 3), FinalJob(smoothing, 1)]


def test_cross_dataset_cells_tune_on_the_tune_dataset_and_retrain_on_the_dataset() -> None:
    suite = load_suite(SUITES / "quickstart.yaml", ["protocols=[holdout]"])
    bench = suite.benchmarks[0].model_copy(update={"tune_dataset": "mnist"})
    cross, holdout = Cell(bench, "cross_dataset", suite.methods[0]), Cell(bench, "holdout", suite.methods[0])
    assert cross.tune_benchmark.dataset == "mnist" and cross.benchmark.dataset == bench.dataset
    assert holdout.tune_benchmark == bench


def test_only_methods_that_declare_a_teacher_need_one() -> None:
    cells = {cell.method.name: cell for cell in suite_cells(load_suite(SUITES / "distillation.yaml"))}
    assert cells["kd"].needs_teacher and not cells["erm"].needs_teacher


def test_every_seed_is_named_and_today_all_come_from_the_sampler_seed() -> None:
    seeds = plan_suite(load_suite(SMOKE, ["tuning.sampler_seed=7"])).seeds
    assert seeds == Seeds(sampler=7, tuning_split=7, trial=7, teacher=7, final_split=7)


def test_a_seed_set_in_the_suite_moves_only_its_own_draw_and_its_hash() -> None:
    plain = load_suite(SMOKE, ["tuning.sampler_seed=7"])
    split = load_suite(SMOKE, ["tuning.sampler_seed=7", "tuning.split_seed=1", "tuning.teacher_seed=2",
                               "final.split_seed=3"])
    assert plan_suite(split).seeds == Seeds(sampler=7, tuning_split=1, trial=7, teacher=2, final_split=3)
    assert split.hash != plain.hash
    unset = ("split_seed", "teacher_seed")
    assert not set(unset) & set(plain.model_dump()["tuning"]) and "split_seed" not in plain.model_dump()["final"]
