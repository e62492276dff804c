"""The Parquet result store: round trips with mixed schemas, replacement, crash safety, consolidation,
and file names for arbitrary row ids. Plain files in tmp_path; no Ray."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.store import RESULTS_FILE, ResultStore, read_results, row_file_name

OK_ERM = {"row_id": "final:digits:erm:s0", "phase": "final", "status": "ok", "seed": 0,
          "test/accuracy": 0.9, "test/nll": 0.35}
OK_KD = {"row_id": "final:digits:kd:s0", "phase": "final", "status": "ok", "seed": 0,
         "test/accuracy": 0.8, "test/ece": 0.05, "kd/teacher": "small_cnn"}
FAILED = {"row_id": "final:digits:kd:s1", "phase": "final", "status": "error", "seed": 1,
          "error": "RuntimeError: out of memory"}


def by_id(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["row_id"]: row for row in frame.to_dict("records")}


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_empty_store_reads_as_an_empty_frame(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    frame = store.read()
    assert len(frame) == 0
    assert list(frame.columns) == ["row_id"]
    assert store.row_ids() == set()
    assert store.completed("final:digits:erm:s0") is None
    assert not (tmp_path / "run").exists()  # reading creates nothing


def test_round_trip_with_mixed_schemas_gives_the_union_of_columns(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for row in (OK_ERM, OK_KD, FAILED):
        store.write(row)

    frame = store.read()

    assert len(frame) == 3
    assert set(frame.columns) == set(OK_ERM) | set(OK_KD) | set(FAILED)
    rows = by_id(frame)
    assert rows["final:digits:erm:s0"]["test/accuracy"] == 0.9
    assert rows["final:digits:erm:s0"]["test/nll"] == 0.35
    assert math.isnan(rows["final:digits:erm:s0"]["test/ece"])
    assert rows["final:digits:kd:s0"]["test/ece"] == 0.05
    assert math.isnan(rows["final:digits:kd:s0"]["test/nll"])
    assert rows["final:digits:kd:s0"]["kd/teacher"] == "small_cnn"
    assert pd.isna(rows["final:digits:erm:s0"]["kd/teacher"])
    assert pd.isna(rows["final:digits:erm:s0"]["error"])
    assert math.isnan(rows["final:digits:kd:s1"]["test/accuracy"])
    assert rows["final:digits:kd:s1"]["error"] == "RuntimeError: out of memory"
    assert rows["final:digits:kd:s1"]["status"] == "error"
    assert sorted(frame["seed"].tolist()) == [0, 0, 1]
    assert pd.api.types.is_float_dtype(frame["test/accuracy"])
    assert store.row_ids() == {OK_ERM["row_id"], OK_KD["row_id"], FAILED["row_id"]}


def test_same_row_id_replaces_the_row(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write(FAILED)
    store.write({**FAILED, "status": "ok", "error": None, "test/accuracy": 0.81})

    frame = store.read()

    assert len(frame) == 1
    assert frame.loc[0, "status"] == "ok"
    assert frame.loc[0, "test/accuracy"] == 0.81
    assert len(files_in(store.rows_dir)) == 1


def test_completed_returns_only_successful_rows(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write(OK_ERM)
    store.write(FAILED)

    done = store.completed(OK_ERM["row_id"])

    assert done is not None
    assert done["row_id"] == OK_ERM["row_id"]
    assert done["test/accuracy"] == 0.9
    assert store.completed(FAILED["row_id"]) is None
    assert store.completed("final:digits:never:s9") is None


def test_write_requires_a_row_id(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for row in ({"status": "ok"}, {"row_id": "", "status": "ok"}):
        with pytest.raises(ValueError, match="row_id"):
            store.write(row)
    assert files_in(store.rows_dir) == []


def crash_mid_write(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make `pq.write_table` write the start of a Parquet file, then fail like a full disk."""
    targets: list[str] = []

    def write_half_then_fail(table: Any, where: Any, *args: Any, **kwargs: Any) -> None:
        targets.append(str(where))
        Path(where).write_bytes(b"PAR1\x15\x04\x15")  # a truncated file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)
    return targets


def test_crash_during_write_keeps_previous_rows_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ResultStore(tmp_path)
    store.write(OK_ERM)
    before = files_in(store.rows_dir)
    targets = crash_mid_write(monkeypatch)

    with pytest.raises(OSError, match="No space left"):
        store.write(OK_KD)
    with pytest.raises(OSError, match="No space left"):
        store.write({**OK_ERM, "test/accuracy": 0.1})  # a failed replacement keeps the old row
    monkeypatch.undo()

    assert len(targets) == 2
    assert all(Path(t).parent == store.rows_dir and Path(t).name.startswith(".tmp-") for t in targets)
    assert files_in(store.rows_dir) == before == [row_file_name(OK_ERM["row_id"])]
    assert not (store.rows_dir / row_file_name(OK_KD["row_id"])).exists()
    frame = store.read()
    assert frame["row_id"].tolist() == [OK_ERM["row_id"]]
    assert frame.loc[0, "test/accuracy"] == 0.9
    assert store.completed(OK_ERM["row_id"])["test/accuracy"] == 0.9


def test_temp_file_left_by_a_killed_writer_is_ignored(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write(OK_ERM)
    (store.rows_dir / ".tmp-k1ll3d.parquet").write_bytes(b"PAR1\x15\x04")  # what SIGKILL mid-write leaves

    frame = store.read()

    assert frame["row_id"].tolist() == [OK_ERM["row_id"]]
    assert store.row_ids() == {OK_ERM["row_id"]}
    store.consolidate()
    assert pd.read_parquet(tmp_path / RESULTS_FILE)["row_id"].tolist() == [OK_ERM["row_id"]]


def test_consolidate_writes_results_equal_to_read(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for row in (OK_ERM, OK_KD, FAILED):
        store.write(row)

    path = store.consolidate()

    assert path == tmp_path / RESULTS_FILE
    pd.testing.assert_frame_equal(pd.read_parquet(path), store.read())
    assert [name for name in files_in(tmp_path) if name.startswith(".")] == []
    store.write({**OK_KD, "row_id": "final:digits:kd:s2"})
    assert len(pd.read_parquet(store.consolidate())) == 4  # consolidating again replaces the file


def test_read_results_falls_back_to_results_parquet(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for row in (OK_ERM, OK_KD, FAILED):
        store.write(row)
    store.consolidate()
    live = read_results(tmp_path)
    pd.testing.assert_frame_equal(live, store.read())

    shutil.rmtree(store.rows_dir)

    fallback = read_results(tmp_path)
    pd.testing.assert_frame_equal(fallback, live)
    assert len(fallback) == 3


def test_read_results_prefers_live_rows(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write(OK_ERM)
    store.consolidate()
    store.write(OK_KD)
    assert set(read_results(tmp_path)["row_id"]) == {OK_ERM["row_id"], OK_KD["row_id"]}
    assert len(read_results(tmp_path / "nothing-here")) == 0


HOSTILE_IDS = ["final:digits:erm:s0", "final/digits/erm/s0", "final_digits_erm_s0", "final:digits/erm:s0",
               "a:b", "a/b", "a_b", "../../escape", ".hidden", "..", "tune:bench:label with spaces:0001",
               "tune:bench:<img src=x>:0001", "final:bench:ünïcödé:s0"]


def test_row_file_names_are_safe_distinct_and_stable() -> None:
    names = [row_file_name(row_id) for row_id in HOSTILE_IDS]

    assert len(set(names)) == len(HOSTILE_IDS)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._=~-]+\.parquet", name), name
        assert not name.startswith(".")
        assert "/" not in name and ":" not in name
    assert names == [row_file_name(row_id) for row_id in HOSTILE_IDS]
    assert row_file_name("final_digits_erm_s0") == "final_digits_erm_s0.parquet"  # safe ids stay readable
    assert row_file_name("final:digits:erm:s0").startswith("final_digits_erm_s0")


def test_hostile_row_ids_stay_inside_rows_and_do_not_collide(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "run")
    for index, row_id in enumerate(HOSTILE_IDS):
        store.write({"row_id": row_id, "status": "ok", "value": index})

    assert files_in(tmp_path) == ["run"]
    assert files_in(store.run_dir) == ["rows"]
    assert all(p.is_file() for p in store.rows_dir.iterdir())
    rows = by_id(store.read())
    assert set(rows) == set(HOSTILE_IDS)
    assert {row_id: rows[row_id]["value"] for row_id in HOSTILE_IDS} == {r: i for i, r in enumerate(HOSTILE_IDS)}
    assert store.completed("a:b")["value"] == HOSTILE_IDS.index("a:b")
    assert store.completed("a/b")["value"] == HOSTILE_IDS.index("a/b")
