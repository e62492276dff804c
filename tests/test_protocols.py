"""Tuning protocols and study persistence, without Ray: what each protocol lets a trial read, the
calibration hold-out of final runs, and the Optuna studies that make tuning resumable."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from harness.data import DataAccess, load_split
from harness.errors import HarnessInputError, SealedSplitError
from harness.jobs import RunSpec, final_run, tuning_trial
from harness.plan import cell_spaces, default_point, suite_cells
from harness.search_space import FloatRange
from harness.suite import BenchmarkSpec, Budget, MethodEntry, TrainSpec, load_suite
from harness.tuning import open_storage, prepare_study, recovered_record, space_signature

SPACE = {"train.lr": FloatRange(low=0.01, high=0.3, log=True)}


def tiny_bench(**changes: object) -> BenchmarkSpec:
    fields = dict(name="digits", dataset="digits", model="tiny_cnn", budget=Budget(epochs=1), augment=False,
                  train=TrainSpec(batch_size=64), tune_val_size=100)
    fields.update(changes)
    return BenchmarkSpec(**fields)


# ---------------------------------------------------------------- what each protocol reads


def test_oracle_handle_pairs_tune_train_with_a_capped_class_balanced_test_sample() -> None:
    access = DataAccess("digits", "oracle", tune_val_size=100)
    test = access.split("test")
    full = load_split("digits", "test")
    assert len(test) == 100 < len(full)
    assert torch.bincount(test.labels, minlength=10).min() >= 9  # stratified: every class present
    rows = {tuple(row.flatten().tolist()) for row in full.images}
    assert all(tuple(image.flatten().tolist()) in rows for image in test.images)  # drawn from the test split
    access.split("tune_train")
    assert access.splits_read == ("test", "tune_train")
    with pytest.raises(HarnessInputError):
        access.split("tune_val")


def test_holdout_trial_reads_tune_splits_only_and_oracle_trial_reads_test() -> None:
    reports: dict[str, list[dict]] = {"holdout": [], "oracle": []}
    for protocol, sink in reports.items():
        spec = RunSpec(benchmark=tiny_bench(), method=MethodEntry(name="erm"), seed=0, protocol=protocol,
                       hyperparams={"train.lr": 0.05})
        tuning_trial(spec, sink.append)
    assert {r["splits_read"] for r in reports["holdout"]} == {"tune_train,tune_val"}
    assert {r["splits_read"] for r in reports["oracle"]} == {"test,tune_train"}
    # the same training data and seed: the two protocols differ only in the selection split
    assert reports["holdout"][-1]["train/samples_seen"] == reports["oracle"][-1]["train/samples_seen"]
    assert reports["holdout"][-1]["train/flops"] > 0


def test_a_holdout_trial_still_cannot_open_the_test_split() -> None:
    from harness.data import sealed_test_split

    with sealed_test_split(), pytest.raises(SealedSplitError):
        load_split("digits", "test")


def test_final_run_holds_out_a_calibration_split_for_temperature_scaling() -> None:
    access = DataAccess("digits", "final", calibration_size=200)
    train, calibration = access.split("train"), access.split("calibration")
    assert len(train) + len(calibration) == len(load_split("digits", "train")) and len(calibration) == 200
    with pytest.raises(HarnessInputError, match="calibration_size"):
        DataAccess("digits", "final").split("calibration")
    bench = tiny_bench(evaluation={"calibration_size": 200, "robust_subset": 20, "latency_iters": 2})
    metrics = final_run(RunSpec(benchmark=bench, method=MethodEntry(name="erm"), seed=0,
                                metrics=("accuracy", "temperature_scaling"), hyperparams={"train.lr": 0.05}))
    assert metrics["train/samples_seen"] <= len(load_split("digits", "train")) - 200
    assert metrics["test/temperature"] > 0 and metrics["test/nll_ts"] == metrics["test/nll_ts"]
    assert metrics["splits_read"] == "calibration,test,train"


# ---------------------------------------------------------------- studies


def test_a_study_reopens_with_its_finished_trials(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    assert prepare_study(storage, "holdout:digits:erm", SPACE, "max") == []
    study = optuna.load_study(study_name="holdout:digits:erm", storage=storage)
    for value in (0.5, 0.7):
        trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(0.01, 0.3, log=True)})
        study.tell(trial, value)
    reopened = prepare_study(open_storage(tmp_path), "holdout:digits:erm", SPACE, "max")
    assert [t.number for t in reopened] == [0, 1] and [t.value for t in reopened] == [0.5, 0.7]


def test_a_new_study_queues_its_first_point_once(tmp_path: Path) -> None:
    """`first` (the defaults) becomes trial 0 of a new study; reopening, as a resumed run does, adds no copy."""
    first = {"train.lr": 0.05}
    storage = open_storage(tmp_path)
    prepare_study(storage, "holdout:digits:erm", SPACE, "max", first)
    prepare_study(open_storage(tmp_path), "holdout:digits:erm", SPACE, "max", first)
    study = optuna.load_study(study_name="holdout:digits:erm", storage=storage)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.WAITING]
    trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(0.01, 0.3, log=True)})
    assert trial.number == 0 and trial.params == first


def test_default_point_reads_the_train_settings_and_the_method_config() -> None:
    suite = load_suite(Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml",
                       ["methods=[{name: label_smoothing, config: {smoothing: 0.5}}, {name: pgd_at}]"])
    spaces = cell_spaces(suite)
    cells = {cell.method.name: cell for cell in suite_cells(suite)}
    smoothing = default_point(cells["label_smoothing"], spaces[cells["label_smoothing"].key])
    assert smoothing == {"train.lr": 0.05, "train.weight_decay": 0.0005, "method.smoothing": 0.3}  # clipped
    pgd = default_point(cells["pgd_at"], spaces[cells["pgd_at"].key])
    assert set(pgd) <= set(spaces[cells["pgd_at"].key]) and pgd["train.lr"] == 0.05


def test_a_changed_search_space_is_refused(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    prepare_study(storage, "holdout:digits:erm", SPACE, "max")
    wider = {"train.lr": FloatRange(low=0.001, high=0.3, log=True)}
    with pytest.raises(HarnessInputError, match="changed since its tuning study began"):
        prepare_study(open_storage(tmp_path), "holdout:digits:erm", wider, "max")
    assert space_signature(SPACE) != space_signature(wider)
    prepare_study(open_storage(tmp_path), "holdout:digits:kd", wider, "max")  # another cell: its own study


def test_trials_left_running_by_a_dead_driver_are_not_counted(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    prepare_study(storage, "c", SPACE, "max")
    study = optuna.load_study(study_name="c", storage=storage)
    distribution = {"train.lr": optuna.distributions.FloatDistribution(0.01, 0.3, log=True)}
    study.tell(study.ask(distribution), 0.6)
    running = study.ask(distribution)  # the driver died while this one ran
    finished = prepare_study(open_storage(tmp_path), "c", SPACE, "max")
    assert [t.number for t in finished] == [0]
    trials = optuna.load_study(study_name="c", storage=storage).get_trials()
    State = optuna.trial.TrialState
    assert [t.state for t in trials] == [State.COMPLETE, State.FAIL, State.WAITING]
    assert trials[1].user_attrs["interrupted"] and trials[2].params == {}  # queued, not yet asked
    assert trials[2].system_attrs["fixed_params"] == running.params  # the same configuration runs again


def test_a_trial_the_store_missed_is_recovered_from_its_study(tmp_path: Path) -> None:
    storage = open_storage(tmp_path)
    prepare_study(storage, "c", SPACE, "max")
    study = optuna.load_study(study_name="c", storage=storage)
    trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(0.01, 0.3, log=True)})
    trial.report(0.4, 1)
    study.tell(trial, 0.55)
    record = recovered_record("c", study.get_trials()[0], "val/accuracy")
    assert record.index == 0 and record.status == "ok" and record.metrics == {"val/accuracy": 0.55}
    assert set(record.params) == {"train.lr"} and record.iterations == 1


def test_resuming_a_run_whose_search_space_changed_exits_2_before_writing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A method's default space edited in code keeps the suite hash, so only the study can tell."""
    import harness.run
    from harness.run import EXIT_BAD_INPUT, main, run_dir_for
    from harness.suite import load_suite

    root = Path(__file__).resolve().parent.parent
    suite = load_suite(root / "suites" / "smoke.yaml")
    run_dir = run_dir_for(suite, tmp_path)
    old_space = {"train.lr": FloatRange(low=0.001, high=1.0, log=True)}  # what the code used to say
    prepare_study(open_storage(run_dir), "holdout:digits:erm", old_space, "max")
    journal = run_dir / "studies.journal"
    before = journal.read_bytes()
    monkeypatch.setattr(harness.run, "execute", lambda *args: pytest.fail("a changed study must not run"))
    assert main([str(root / "suites" / "smoke.yaml"), "--out", str(tmp_path), "--resume"]) == EXIT_BAD_INPUT
    # nothing written but the writer lock taken before the checks (see harness/writer_lock.py)
    assert journal.read_bytes() == before and sorted(p.name for p in run_dir.iterdir()) == ["studies.journal",
                                                                                         "writer.lock"]


def test_the_searcher_serves_cells_in_order_with_stable_trial_numbers(tmp_path: Path) -> None:
    from ray.tune.search import Searcher

    from harness.suite import TuningSpec
    from harness.tuning import CELL_KEY, TRIAL_KEY, CellSearcher, TuningCell

    storage, tuning = open_storage(tmp_path), TuningSpec(trials=2)
    spec = RunSpec(benchmark=tiny_bench(), method=MethodEntry(name="erm"), seed=0)
    prepare_study(storage, "tuned", SPACE, "max")
    prepare_study(storage, "fixed", {}, "max")
    cells = [TuningCell(key="tuned", spec=spec, space=SPACE, trials=2),
             TuningCell(key="fixed", spec=spec, space={}, trials=1, next_index=3)]  # trials 0-2 already stored
    searcher = CellSearcher(cells, tuning, storage, tmp_path / "samplers")
    first, second, third = (searcher.suggest(trial_id) for trial_id in ("a", "b", "c"))
    assert [c[CELL_KEY] for c in (first, second, third)] == ["tuned", "tuned", "fixed"]
    assert [c[TRIAL_KEY] for c in (first, second, third)] == [0, 1, 3]  # a fixed cell never reuses a stored number
    assert 0.01 <= first["train.lr"] <= 0.3 and set(third) == {CELL_KEY, TRIAL_KEY}
    assert searcher.suggest("d") == Searcher.FINISHED
    assert len(list((tmp_path / "samplers").glob("*.pkl"))) == 1  # the tuned cell's sampler state, for resumes
