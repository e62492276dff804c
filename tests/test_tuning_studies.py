"""Tuning variance and the tuning objective, without Ray: `tuning.repeats` plans independent studies with
their own sampler seeds and retrains each one's best config for every seed; `tuning.sampler: sobol_tpe`
starts from a seeded scrambled Sobol sequence; the objective's metric is computed on tune_val, selects,
and respects its floors; the leaderboard and claims pair runs by (study, seed)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
import pytest

from harness.jobs import RunSpec, tuning_trial
from harness.leaderboard import leaderboard, seed_scores, seeds_and_studies
from harness.objective import OBJECTIVE_KEY, TunedConfig, TuningObjective, select
from harness.plan import SamplerChoice, plan_suite
from harness.row_builders import final_config_hash, final_row, final_row_id, trial_row_id
from harness.rows import check_row
from harness.runner import select_best_trial
from harness.samplers import build_sampler, from_unit, optuna_distributions
from harness.search_space import FloatRange
from harness.suite import BenchmarkSpec, Budget, MethodEntry, TrainSpec, load_suite

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"
TWO_METHODS = "methods=[{name: erm}, {name: label_smoothing}]"
SPACE = {"train.lr": FloatRange(low=1e-3, high=1.0, log=True), "train.weight_decay": FloatRange(low=0.0, high=0.1)}


# ---------------------------------------------------------------- repeats: studies, seeds, final jobs


def test_repeats_plan_independent_studies_each_with_its_own_sampler_seed() -> None:
    suite = load_suite(SMOKE, [TWO_METHODS, "tuning.repeats=3", "tuning.sampler=sobol_tpe"])
    studies = plan_suite(suite).studies
    erm = f"holdout:{suite.benchmarks[0].name}:erm"
    assert [study.key for study in studies][:3] == [erm, f"{erm}#1", f"{erm}#2"]
    assert len(studies) == 6
    assert len({study.sampler.seed for study in studies}) == 6  # no two studies, of one method or two, share draws
    assert {study.sampler.name for study in studies} == {"sobol_tpe"}


def test_tpe_keeps_todays_seed_for_study_zero_of_every_cell() -> None:
    suite = load_suite(SMOKE, [TWO_METHODS, "tuning.repeats=2", "tuning.sampler_seed=7"])
    studies = plan_suite(suite).studies
    assert [study.sampler.seed for study in studies if study.index == 0] == [7, 7]
    assert all(study.sampler.seed != 7 for study in studies if study.index == 1)
    assert {study.sampler.startup_trials for study in studies} == {10}


def test_final_jobs_are_studies_times_seeds_and_study_zero_keeps_its_row_ids() -> None:
    suite = load_suite(SMOKE, [TWO_METHODS, "tuning.repeats=2", "final.seeds=[0, 1, 2]"])
    jobs = plan_suite(suite).final_jobs()
    assert len(jobs) == 2 * 2 * 3
    ids = [final_row_id(job) for job in jobs if job.cell.method.name == "erm"]
    cell = jobs[0].cell.key
    assert ids == [f"final:{cell}:s0", f"final:{cell}:s1", f"final:{cell}:s2",
                   f"final:{cell}#1:s0", f"final:{cell}#1:s1", f"final:{cell}#1:s2"]
    assert trial_row_id(jobs[0].cell, 3) == f"tune:{cell}:0003"
    assert trial_row_id(jobs[0].cell, 3, study=1) == f"tune:{cell}#1:0003"


def test_the_new_keys_at_their_defaults_keep_every_hash() -> None:
    plain = load_suite(SMOKE)
    explicit = load_suite(SMOKE, ["tuning.repeats=1", "tuning.sampler=tpe", "methods[0].tuning_objective=null"])
    assert explicit.hash == plain.hash
    assert load_suite(SMOKE, ["tuning.repeats=2"]).hash != plain.hash
    assert load_suite(SMOKE, ["tuning.sampler=sobol_tpe"]).hash != plain.hash
    job = plan_suite(plain).final_jobs()[0]
    assert "tuning_objective" not in job.cell.method.model_dump(mode="json")  # final runs' config hashes stay
    assert final_config_hash(job, {"train.lr": 0.1}) == final_config_hash(plan_suite(explicit).final_jobs()[0],
                                                                           {"train.lr": 0.1})


def test_a_final_row_records_its_study_sampler_objective_and_a_fallback() -> None:
    suite = load_suite(SMOKE, [TWO_METHODS, "tuning.repeats=2", "tuning.sampler=sobol_tpe",
                               "tuning.objective={metric: val/nll, floor: {val/accuracy: 0.5}}"])
    job = plan_suite(suite).final_jobs()[-1]
    params = TunedConfig({"train.lr": 0.1}, fallback="no trial of 2 cleared the floor")
    row = final_row(suite, job, params, started_at="t0", error=None, results={"test/accuracy": 0.9}).to_row()
    check_row(row)
    assert row["study"] == 1 and row["sampler"] == "sobol_tpe"
    assert '"start": "scrambled sobol"' in row["sampler_settings"]
    assert '"mode": "min"' in row["tuning_objective"]  # val/nll is declared lower-is-better
    assert row["selection_fallback"] == "no trial of 2 cleared the floor"
    assert row["config_json"] == '{"train.lr": 0.1}'


# ---------------------------------------------------------------- the sampler's start


def ask_lrs(sampler: optuna.samplers.BaseSampler, count: int) -> list[float]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    values = []
    for _ in range(count):
        trial = study.ask(fixed_distributions=optuna_distributions(SPACE))
        values.append(trial.params["train.lr"])
        study.tell(trial, -abs(math.log10(trial.params["train.lr"]) + 1))
    return values


def test_the_sobol_start_covers_each_dimension_and_depends_only_on_its_seed() -> None:
    first = ask_lrs(build_sampler("sobol_tpe", 11, 10, SPACE), 4)
    quarters = sorted(int((math.log10(lr) + 3) / 3 * 4) for lr in first)  # log10(lr) in [-3, 0]
    assert quarters == [0, 1, 2, 3]  # four Sobol points: one in each quarter of the range, unlike four draws
    assert ask_lrs(build_sampler("sobol_tpe", 11, 10, SPACE), 4) == first  # a resumed study proposes the same
    assert ask_lrs(build_sampler("sobol_tpe", 12, 10, SPACE), 4) != first


def test_the_searcher_builds_each_cells_sampler_from_its_study(tmp_path: Path) -> None:
    from harness.suite import TuningSpec
    from harness.tuning import CellSearcher, TuningCell, open_storage, prepare_study

    storage, tuning = open_storage(tmp_path), TuningSpec(trials=2)
    spec = RunSpec(benchmark=tiny_bench(), method=MethodEntry(name="erm"), seed=0)
    choices = {"a": SamplerChoice("sobol_tpe", 3, 10), "b": SamplerChoice("sobol_tpe", 4, 10)}
    for key in choices:
        prepare_study(storage, key, SPACE, "max")
    cells = [TuningCell(key=key, spec=spec, space=SPACE, trials=1, sampler=choice) for key, choice in choices.items()]
    searcher = CellSearcher(cells, tuning, storage, tmp_path / "samplers")
    proposals = [searcher.suggest(name) for name in ("x", "y")]
    distributions = optuna_distributions(SPACE)
    for proposal, choice in zip(proposals, choices.values(), strict=True):
        sampler = build_sampler(choice.name, choice.seed, choice.startup_trials, SPACE)
        expected = sampler._points[0]  # point 0 of the study's own Sobol sequence
        assert proposal["train.lr"] == pytest.approx(from_unit(float(expected[0]), distributions["train.lr"]))
    assert proposals[0]["train.lr"] != proposals[1]["train.lr"]


# ---------------------------------------------------------------- the objective


TRIALS = [
    {"status": "ok", "trial_index": 0, "val/accuracy": 0.90, "val/pgd_linf_accuracy": 0.20, "val/aurc": 0.05},
    {"status": "ok", "trial_index": 1, "val/accuracy": 0.40, "val/pgd_linf_accuracy": 0.60, "val/aurc": 0.01},
    {"status": "ok", "trial_index": 2, "val/accuracy": 0.75, "val/pgd_linf_accuracy": 0.35, "val/aurc": 0.08},
    {"status": "failed", "trial_index": 3, "val/accuracy": 0.99, "val/pgd_linf_accuracy": 0.99, "val/aurc": 0.0},
]


def test_the_objective_selects_on_its_metric_among_trials_that_clear_the_floor() -> None:
    robust = TuningObjective(metric="val/pgd_linf_accuracy", floor={"val/accuracy": 0.7})
    chosen = select(TRIALS, robust)
    assert chosen.trial["trial_index"] == 2 and chosen.fallback is None  # trial 1 is more robust, below the floor
    assert select(TRIALS, TuningObjective(metric="val/pgd_linf_accuracy")).trial["trial_index"] == 1
    assert select(TRIALS, TuningObjective(metric="val/aurc")).trial["trial_index"] == 1  # lower is better
    assert select_best_trial(TRIALS, "val/pgd_linf_accuracy", "max", {"val/accuracy": 0.7})["trial_index"] == 2


def test_no_trial_above_the_floor_falls_back_and_says_so() -> None:
    chosen = select(TRIALS, TuningObjective(metric="val/pgd_linf_accuracy", floor={"val/accuracy": 0.95}))
    assert chosen.trial["trial_index"] == 1
    assert chosen.fallback is not None and "val/accuracy >= 0.95" in chosen.fallback
    assert select([TRIALS[3]], TuningObjective(metric="val/accuracy")).trial is None


def tiny_bench(**changes: object) -> BenchmarkSpec:
    fields = dict(name="digits", dataset="digits", model="tiny_cnn", budget=Budget(epochs=1), augment=False,
                  train=TrainSpec(batch_size=64), tune_val_size=100)
    fields.update(changes)
    return BenchmarkSpec(**fields)


def test_a_trial_computes_its_objective_on_tune_val_and_reports_it() -> None:
    bench = tiny_bench(evaluation={"pgd_steps": 2, "robust_subset": 50})
    reports: list[dict] = []
    spec = RunSpec(benchmark=bench, method=MethodEntry(name="erm"), seed=0, metrics=("pgd_linf",),
                   objective="val/pgd_linf_accuracy")
    tuning_trial(spec, reports.append)
    last = reports[-1]
    assert 0.0 <= last["val/pgd_linf_accuracy"] <= 1.0
    assert last[OBJECTIVE_KEY] == last["val/pgd_linf_accuracy"]
    assert not any(key.startswith("test/") for key in last)
    plain: list[dict] = []
    tuning_trial(RunSpec(benchmark=bench, method=MethodEntry(name="erm"), seed=0), plain.append)
    assert plain[-1][OBJECTIVE_KEY] == plain[-1]["val/accuracy"] == last["val/accuracy"]  # scoring changes no training
    assert "val/pgd_linf_accuracy" not in plain[-1]


# ---------------------------------------------------------------- pairing by (study, seed)


def final_rows(studies: int, seeds: int, effect: float) -> pd.DataFrame:
    rows = []
    for study in range(studies):
        for seed in range(seeds):
            for method, shift in (("erm", 0.0), ("label_smoothing", effect)):
                rows.append({"phase": "final", "status": "ok", "benchmark": "digits", "protocol": "holdout",
                             "method": method, "seed": seed, "study": study, "primary_metric": "test/accuracy",
                             "test/accuracy": 0.8 + 0.01 * study + 0.003 * seed + shift})
    return pd.DataFrame(rows)


def test_runs_pair_by_study_and_seed_and_n_is_seeds_times_studies() -> None:
    rows = final_rows(studies=2, seeds=3, effect=0.02)
    scores = seed_scores(rows, "test/accuracy")
    assert len(scores) == 6 and seeds_and_studies(scores.index) == (3, 2)
    table = leaderboard(rows).set_index("method")
    assert table.loc["label_smoothing", "n"] == 6
    assert table.loc["label_smoothing", "vs_baseline:n_pairs"] == 6
    assert table.loc["label_smoothing", "vs_baseline:diff_mean"] == pytest.approx(0.02)
    old = rows[rows["study"] == 0].drop(columns="study")  # a store from before studies: paired by seed
    assert list(seed_scores(old, "test/accuracy").index) == [0, 1, 2]
    assert seeds_and_studies(seed_scores(old, "test/accuracy").index) == (3, 1)


def test_the_sampler_start_simulation_runs_at_toy_size() -> None:
    from bench.sampler_start import SAMPLERS, simulate

    rows = simulate([3], seeds=2, objectives=1)
    assert [row["sampler"] for row in rows] == list(SAMPLERS)
    assert all(math.isfinite(row["mean_regret"]) and row["mean_regret"] >= 0 for row in rows)


def test_a_resume_checks_the_search_space_of_every_study() -> None:
    from harness.plan import cell_spaces

    suite = load_suite(SMOKE, [TWO_METHODS, "tuning.repeats=2"])
    spaces = cell_spaces(suite)
    assert set(spaces) == {study.key for study in plan_suite(suite).studies}
    assert spaces["holdout:digits:erm#1"] == spaces["holdout:digits:erm"]


def test_a_claim_rests_on_seeds_times_studies_pairs() -> None:
    from harness.claims import judge_claims
    from harness.method import Claim

    suite = {"name": "toy", "benchmarks": [{"name": "digits", "dataset": "ten", "model": "m", "budget": {"steps": 5}}],
             "methods": [{"name": "erm"}, {"name": "label_smoothing"}], "final": {"seeds": [0, 1, 2]},
             "tuning": {"repeats": 2}}
    (record,) = judge_claims(final_rows(studies=2, seeds=3, effect=0.02), suite,
                             {"label_smoothing": Claim("gains")}, {"ten": 10})
    assert (record.seeds, record.studies) == (3, 2)
    assert record.difference == pytest.approx(0.02)


def test_budget_curves_follow_each_study_on_its_own() -> None:
    from harness.studies import budget_curves

    trials = [{"phase": "tune", "status": "ok", "benchmark": "digits", "protocol": "holdout", "method": "erm",
               "study": study, "trial_index": index, "val/accuracy": value}
              for study, values in ((0, (0.5, 0.6)), (1, (0.9, 0.4))) for index, value in enumerate(values)]
    curves = budget_curves(pd.DataFrame(trials))
    assert curves["trial"].tolist() == [1, 2, 1, 2]  # two searches of two trials, not one of four
    assert curves.loc[curves["study"] == 0, "best_so_far"].tolist() == [0.5, 0.6]
    assert curves.loc[curves["study"] == 1, "best_so_far"].tolist() == [0.9, 0.9]
