"""Faults injected into the store, the studies journal and the run directory's writer lock, without Ray:
fsync before a row counts, SIGKILL mid-write, corrupt and truncated files, two writers, a stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest

from harness import store as store_module
from harness.run import EXIT_BAD_INPUT, main, run_dir_for
from harness.store import ResultStore, UnreadableRowError, row_file_name
from harness.suite import load_suite
from harness.tuning import STUDY_FILE, open_storage, repair_journal
from harness.writer_lock import LOCK_FILE, WriterLock

OLD = {"row_id": "final:digits:erm:s0", "phase": "final", "status": "ok", "test/accuracy": 0.5}
NEW = {**OLD, "test/accuracy": 0.9}


def test_a_row_counts_only_after_its_file_and_directory_are_fsynced(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultStore(tmp_path)
    store.write(OLD)  # rows/ exists: what follows is one ordinary write
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        events.append("fsync dir" if target.is_dir() else f"fsync {target.name[:5]}")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store_module.os, "replace", replace)
    store.write(NEW)
    assert events == ["fsync .tmp-", "rename", "fsync dir"]


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import pyarrow.parquet as pq
    from harness import store
    rows = store.ResultStore(sys.argv[1])
    rows.write({"row_id": "final:digits:erm:s0", "phase": "final", "status": "ok", "test/accuracy": 0.5})
    real_write, real_fsync_dir = pq.write_table, store.fsync_directory

    def slow_write(table, where, *args, **kwargs):  # half a file, then a long stall: the kill lands here
        Path(where).write_bytes(b"PAR1\\x15\\x04")
        print("mid-write", flush=True)
        time.sleep(60)

    def slow_fsync_dir(directory):  # renamed into place; the kill lands before the directory is fsynced
        print("renamed", flush=True)
        time.sleep(60)

    if sys.argv[2] == "mid-write":
        pq.write_table = slow_write
    else:
        store.fsync_directory = slow_fsync_dir
    rows.write({"row_id": "final:digits:erm:s0", "phase": "final", "status": "ok", "test/accuracy": 0.9})
""")


@pytest.mark.parametrize(("moment", "accuracy"), [("mid-write", 0.5), ("renamed", 0.9)])
def test_sigkill_during_a_row_write_leaves_the_old_row_or_the_new_one(tmp_path: Path, repo_root: Path,
                                                                      moment: str, accuracy: float) -> None:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), moment], cwd=repo_root,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == moment
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    store = ResultStore(tmp_path)
    rows = store.read()
    assert rows["row_id"].tolist() == [OLD["row_id"]] and rows["test/accuracy"].tolist() == [accuracy]
    assert store.set_aside_unreadable() == []  # a killed writer leaves nothing unreadable behind


def test_an_unreadable_row_file_is_named_then_set_aside_so_its_work_runs_again(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.write(OLD)
    other = {**OLD, "row_id": "final:digits:kd:s0"}
    store.write(other)
    damaged = store.rows_dir / row_file_name(other["row_id"])
    damaged.write_bytes(damaged.read_bytes()[:40])  # truncated, as a disk fault or a half copy leaves it

    with pytest.raises(UnreadableRowError, match=damaged.name):
        store.read()  # never a silently shorter table
    moved = store.set_aside_unreadable()

    assert [m.name for m in moved] == [damaged.name] and moved[0].moved_to.exists()
    assert store.read()["row_id"].tolist() == [OLD["row_id"]]
    assert store.completed(other["row_id"]) is None  # so a resumed run does it again
    assert store.set_aside_unreadable() == []


def study_journal(run_dir: Path, trials: int) -> Path:
    storage = open_storage(run_dir)
    study = optuna.create_study(storage=storage, study_name="holdout:digits:erm", direction="maximize")
    for value in range(trials):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=float(value)))
    return run_dir / STUDY_FILE


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_studies_journal_is_cut_back_to_its_whole_records(tmp_path: Path, damage: str) -> None:
    journal = study_journal(tmp_path, trials=3)
    whole = journal.read_bytes()
    assert repair_journal(tmp_path) is None  # a whole journal is left alone
    lines = whole.splitlines(keepends=True)
    if damage == "truncated":  # the last append cut short
        journal.write_bytes(whole[:-10])
        kept = len(lines) - 1
    else:  # a garbled record in the middle: Optuna refuses the whole file
        journal.write_bytes(b"".join([*lines[:3], b'{"op_code": 5, "tri\n', *lines[3:]]))
        kept = 3
        with pytest.raises(ValueError):
            optuna.load_study(study_name="holdout:digits:erm", storage=open_storage(tmp_path)).get_trials()

    message = repair_journal(tmp_path)

    assert message is not None and f"kept the {kept} whole records" in message and STUDY_FILE in message
    assert journal.read_bytes() == b"".join(lines[:kept])
    assert len(list(tmp_path.glob(f"{STUDY_FILE}.damaged-*"))) == 1
    study = optuna.load_study(study_name="holdout:digits:erm", storage=open_storage(tmp_path))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=9.0))  # and it appends again
    assert repair_journal(tmp_path) is None


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.writer_lock import WriterLock
    WriterLock(Path(sys.argv[1])).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_second_run_on_a_live_run_directory_exits_2_and_a_killed_runs_lock_does_not_block(
        tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite_file = repo_root / "suites" / "smoke.yaml"
    run_dir = run_dir_for(load_suite(suite_file), tmp_path)
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=repo_root, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for extra in ((), ("--resume",)):
            assert main([str(suite_file), "--out", str(tmp_path), "--no-dashboard", *extra]) == EXIT_BAD_INPUT
            error = capsys.readouterr().err
            assert "being written by a live harness.run" in error and f"pid {holder.pid} " in error
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert f"pid {holder.pid} " in (run_dir / LOCK_FILE).read_text()  # the dead holder's lock file is still there
    lock = WriterLock(run_dir)
    lock.acquire()  # but the kernel released its lock
    assert f"pid {os.getpid()} " in (run_dir / LOCK_FILE).read_text()
    lock.release()


def test_resume_sets_aside_an_unreadable_row_and_names_it(tmp_path: Path, repo_root: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "no-data"))  # mnist is missing: exit 2 before Ray
    suite_file = repo_root / "suites" / "smoke.yaml"
    run_dir = run_dir_for(load_suite(suite_file, ["benchmarks[0].dataset=mnist"]), tmp_path)
    ResultStore(run_dir).write(OLD)
    damaged = ResultStore(run_dir).rows_dir / "final_digits_kd_s0.parquet"
    damaged.write_bytes(b"PAR1 not really")
    # the missing dataset stops the run at the input check, after the repair and before Ray starts
    assert main([str(suite_file), "--out", str(tmp_path), "--resume", "--set", "benchmarks[0].dataset=mnist"]) == 2
    error = capsys.readouterr().err
    assert "dataset 'mnist' is not available" in error
    assert "rows/final_digits_kd_s0.parquet is unreadable" in error and "its work runs again" in error
    assert not damaged.exists() and len(ResultStore(run_dir).read()) == 1
    assert pq.read_table(ResultStore(run_dir).rows_dir / row_file_name(OLD["row_id"])).num_rows == 1
