"""The result-row schema, without Ray: rows built for each kind pass it, the store refuses a bad row
naming the field (and writes nothing), and rows written before the schema still read as they did."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.plan import FinalJob, suite_cells
from harness.row_builders import final_row, run_results, teacher_row, trial_row
from harness.rows import SCHEMA_VERSION, RowSchemaError, check_row
from harness.store import ResultStore
from harness.suite import load_suite
from harness.tuning import TrialRecord

SUITES = Path(__file__).resolve().parent.parent / "suites"
PUBLISHED = Path(__file__).resolve().parent.parent / "docs" / "leaderboard"
PROVENANCE = {"row_id", "schema_version", "benchmark", "method", "seed", "protocol", "dataset", "scenario",
              "suite_name", "suite_hash", "git_commit", "library_versions", "driver_hardware", "status", "error",
              "finished_at"}


@pytest.fixture(scope="module")
def distillation() -> object:
    return load_suite(SUITES / "distillation.yaml")


def a_final_row(suite: object) -> dict:
    cell = suite_cells(suite)[0]
    return final_row(suite, FinalJob(cell, 0), {"train.lr": 0.1}, started_at="t0", error=None,
                     results={"test/accuracy": 0.9, "splits_read": "test,train", "world_size": 1}, wall_s=3.0).to_row()


def test_each_kind_of_row_carries_the_provenance_fields_and_the_version(distillation: object) -> None:
    cell = suite_cells(distillation)[1]
    record = TrialRecord(cell=cell.key, index=3, params={"train.lr": 0.1}, status="ok",
                         metrics={"val/accuracy": 0.8}, iterations=2, wall_s=1.5, node_id="n", splits_read="tune_train")
    trial = trial_row(distillation, cell, record, seed=0).to_row()
    teacher = teacher_row(distillation, cell.benchmark, "tune", 0, started_at="t0", error="RuntimeError: boom").to_row()
    final = a_final_row(distillation)
    for row in (trial, teacher, final):
        assert set(row) >= PROVENANCE and row["schema_version"] == SCHEMA_VERSION
        check_row(row)
    assert trial["row_id"] == f"tune:{cell.key}:0003" and trial["tune/iterations"] == 2.0 and trial["trial"] == "0003"
    assert (teacher["status"], teacher["protocol"], teacher["method"]) == ("failed", None, "teacher:fast_cnn_wide")
    assert "wall_s" not in teacher  # a failed teacher has no timings: fields not given stay out of the row
    assert final["status"] == "ok" and final["world_size"] == 1 and isinstance(final["world_size"], int)


def test_the_store_refuses_a_bad_row_naming_the_field_and_writes_nothing(tmp_path: Path,
                                                                          distillation: object) -> None:
    store, good = ResultStore(tmp_path), a_final_row(distillation)
    missing = {k: v for k, v in good.items() if k != "seed"}
    with pytest.raises(RowSchemaError, match=r"field 'seed': required"):
        store.write(missing)
    with pytest.raises(RowSchemaError, match=r"field 'seed'.*valid integer.*'zero'"):
        store.write({**good, "seed": "zero"})
    with pytest.raises(RowSchemaError, match=r"field 'status'"):
        store.write({**good, "status": "done"})
    with pytest.raises(RowSchemaError, match=r"field 'config_jsn': not a field of a final row"):
        store.write({**good, "config_jsn": "{}"})
    with pytest.raises(RowSchemaError, match=r"field 'test/ece': a metric column holds a number"):
        store.write({**good, "test/ece": "low"})
    with pytest.raises(RowSchemaError, match=r"field 'phase': 'warmup' is not one of tune, teacher, final"):
        store.write({**good, "phase": "warmup"})
    with pytest.raises(RowSchemaError, match=r"field 'schema_version': 7 is not a known version"):
        store.write({**good, "schema_version": 7})
    assert store.row_ids() == set()
    store.write(good)
    assert store.row_ids() == {good["row_id"]}


def test_a_twin_copies_what_the_run_measured_but_not_its_identity_or_nulls(distillation: object) -> None:
    source = {**a_final_row(distillation), "trial_index": float("nan"), "tune_phase": None, "test/nll": float("nan")}
    assert run_results(source) == {"test/accuracy": 0.9, "splits_read": "test,train", "world_size": 1, "wall_s": 3.0}


def test_rows_written_before_the_schema_are_stored_and_read_as_they_were(tmp_path: Path) -> None:
    legacy = {"row_id": "final:holdout:fm:kd:s0", "phase": "final", "status": "ok", "seed": 0, "test/accuracy": 0.8}
    store = ResultStore(tmp_path)
    store.write(legacy)
    assert store.read().to_dict("records") == [legacy]
    before_the_schema = PUBLISHED / "label_noise" / "d679d91e4b17bd35" / "results.parquet"  # published 2026-11-29
    assert before_the_schema.exists(), "the published runs are part of the repository"
    frame = pd.read_parquet(before_the_schema)
    assert "schema_version" not in frame  # written before the schema; test_published_runs re-aggregates them
    assert {"phase", "row_id", "status", "seed", "suite_hash"} <= set(frame)
