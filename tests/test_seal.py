"""The seal: no route from training code to the test split, in a tuning trial or while a final run trains.

Each route the probe plugin tries (see tests/probe_plugin.py) must fail the trial or run, with an error
that says what was refused; the audit records the data files each job opened, and its digest."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import pytest

from harness.audit import record_digest
from harness.data import clear_cache, load_split, test_split_sealed
from harness.data.sources import BUILTIN_SOURCES
from harness.errors import SealBrokenError, SealedSplitError
from harness.jobs import RunSpec, final_run, tuning_trial
from harness.plugins import PLUGINS_ENV
from harness.suite import BenchmarkSpec, Budget, MethodEntry, TuningSpec

PROBE_MODULE = "tests.probe_plugin"
DIGITS_FILE = str(BUILTIN_SOURCES["digits"].split_files("test")[0])  # type: ignore[attr-defined]
# route -> the error it must end in (the API refuses; the audit refuses what goes around it)
ROUTES = {"load_split": (SealedSplitError, "sealed during tuning"),
          "registry": (SealedSplitError, "sealed during tuning"),
          "inner": (SealBrokenError, "digits.csv.gz"),
          "switch": (SealBrokenError, "digits.csv.gz"),
          "sklearn": (SealBrokenError, "digits.csv.gz"),
          "raw_file": (SealBrokenError, "t10k-images-idx3-ubyte.gz"),
          "swallow": (SealBrokenError, "t10k-images-idx3-ubyte.gz"),
          "subprocess": (SealBrokenError, "subprocess.Popen while training")}


@pytest.fixture(autouse=True)
def probe_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tests.probe_plugin  # noqa: F401  (registers the probe in this process)

    monkeypatch.setenv(PLUGINS_ENV, PROBE_MODULE)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))  # a (fake) Fashion-MNIST whose test file is watched
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(b"not read by honest code"))


def digits_spec(method: str = "erm", protocol: str = "holdout", **config: str) -> RunSpec:
    bench = BenchmarkSpec(dataset="digits", model="tiny_cnn", budget=Budget(epochs=1), augment=False)
    return RunSpec(benchmark=bench, method=MethodEntry(name=method, config=dict(config)), seed=0, protocol=protocol)


def probe(via: str, tmp_path: Path) -> RunSpec:
    return digits_spec("test_split_probe", via=via, path=str(tmp_path / "t10k-images-idx3-ubyte.gz"))


@pytest.mark.parametrize("via", sorted(ROUTES))
def test_every_route_to_the_test_split_fails_a_tuning_trial(via: str, tmp_path: Path) -> None:
    error, says = ROUTES[via]
    reports: list[dict] = []
    with pytest.raises(error, match=says):
        tuning_trial(probe(via, tmp_path), reports.append)
    assert reports == []  # no score of a trial that went for the test split
    assert not test_split_sealed()  # the seal is lifted once tuning code returns
    assert len(load_split("digits", "test")) > 0  # and evaluation code can read the test split


@pytest.mark.parametrize("via", ["load_split", "sklearn", "swallow"])
def test_a_final_run_cannot_read_the_test_split_while_it_trains(via: str, tmp_path: Path) -> None:
    error, says = ROUTES[via]
    with pytest.raises(error, match=says.replace("during tuning", "during tuning and while training runs")):
        final_run(probe(via, tmp_path))


def test_the_test_split_left_by_an_oracle_trial_is_not_cached_for_the_next_trial(tmp_path: Path) -> None:
    tuning_trial(digits_spec(protocol="oracle"), lambda metrics: None)  # it read the test split, in this process
    with pytest.raises(LookupError, match="no test split of 'digits' is cached"):
        tuning_trial(probe("cache", tmp_path), lambda metrics: None)


def test_an_honest_trial_reads_only_tune_splits_and_its_audit_records_the_files_opened() -> None:
    clear_cache()  # so this trial opens the digits file itself
    reports: list[dict] = []
    outcome = tuning_trial(digits_spec("erm"), reports.append)
    assert outcome["splits_read"] == "tune_train,tune_val"
    assert len(reports) == 1 and 0.0 <= reports[0]["val/accuracy"] <= 1.0
    assert reports[0]["train/samples_seen"] > 0
    record = json.loads(outcome["data_files_read"])
    assert record["reads"] == [{"file": os.path.realpath(DIGITS_FILE), "holds": "digits28:test,digits28:train,"
                                "digits:test,digits:train", "while_training": False}]
    assert os.path.realpath(DIGITS_FILE) in record["watched"]
    assert outcome["audit_digest"] == record_digest(outcome["data_files_read"]) == reports[0]["audit_digest"]


def test_a_final_run_reads_test_after_training_and_records_it() -> None:
    clear_cache()
    metrics = final_run(dataclasses.replace(digits_spec("erm"), metrics=("accuracy",)))
    assert metrics["splits_read"] == "test,train" and 0.0 <= metrics["test/accuracy"] <= 1.0
    reads = json.loads(metrics["data_files_read"])["reads"]
    assert [read["while_training"] for read in reads] == [False]  # one file, opened before and after training
    assert metrics["audit_digest"] == record_digest(metrics["data_files_read"])


@pytest.mark.ray
def test_the_seal_holds_inside_ray_tune_workers(tmp_path, repo_root) -> None:
    """Through real Ray Tune: every trial of the probing plugin fails with the seal's error, in its record."""
    from harness import cluster
    from harness.tuning import TuningCell, open_storage, prepare_study, to_tune_space, tune_cells

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))
    os.environ[PLUGINS_ENV] = PROBE_MODULE  # cluster.connect forwards it to every worker
    info = cluster.connect(num_cpus=2)
    records = []
    routes = ("load_split", "sklearn", "swallow")
    try:
        tuning = TuningSpec(trials=1, scheduler="fifo")
        space = to_tune_space(tuning.engine_space, {})
        storage = open_storage(tmp_path)
        cells = []
        for via in routes:
            key = f"holdout:digits:probe_{via}"
            prepare_study(storage, key, space, tuning.mode)
            cells.append(TuningCell(key=key, spec=probe(via, tmp_path), space=space, trials=tuning.trials))
        tune_cells(cells, tuning, storage=storage, sampler_dir=tmp_path / "samplers", experiment_dir=tmp_path,
                   name="probe", cluster_cpus=info.cpus, on_trial_done=records.append)
    finally:
        cluster.shutdown()
    by_route = {record.cell.removeprefix("holdout:digits:probe_"): record for record in records}
    assert sorted(by_route) == sorted(routes)
    for via, record in by_route.items():
        error, says = ROUTES[via]
        assert record.status == "failed"
        assert error.__name__ in (record.error or "") and says in (record.error or ""), record.error
