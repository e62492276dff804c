"""Faults injected into real suite runs: a driver killed with SIGKILL in the middle of tuning (while a
second run on its directory is refused), a method that raises, a worker that dies, a disk that fills up.

`--resume` must finish the suite without rerunning a finished trial (counted in the Optuna studies
under the run directory), without losing or duplicating a row, and with the same final results as
an uninterrupted run of the same suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from harness.store import read_results
from harness.suite import load_suite
from harness.tuning import open_storage

pytestmark = pytest.mark.ray

TRIALS = 3
# sequential FIFO tuning, so an uninterrupted run is reproducible trial for trial
OVERRIDES = ("methods=[{name: erm}, {name: label_smoothing}]", f"tuning.trials={TRIALS}", "tuning.scheduler=fifo",
             "tuning.max_concurrent=1", "final.seeds=[0]")


def command(out: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "harness.run", "suites/smoke.yaml", "--out", str(out), "--no-dashboard", *extra]
    for override in OVERRIDES:
        args += ["--set", override]
    return args


def run(repo_root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(out, *extra), cwd=repo_root, capture_output=True, text=True, timeout=900)


def kill_after_tune_rows(repo_root: Path, out: Path, run_dir: Path, rows: int) -> None:
    """Start the suite, SIGKILL its whole process group once `rows` tuning rows are stored."""
    process = subprocess.Popen(command(out), cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            stored = list((run_dir / "rows").glob("tune_*.parquet")) if (run_dir / "rows").exists() else []
            if len(stored) >= rows:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the suite finished before it could be killed"
        os.kill(process.pid, signal.SIGSTOP)  # held still while a second run tries the same directory
        second = run(repo_root, out, "--resume")
        assert second.returncode == 2 and f"pid {process.pid} " in second.stderr, second.stderr[-3000:]
        assert "being written by a live harness.run" in second.stderr
    finally:
        with_group = os.getpgid(process.pid) if process.poll() is None else None
        if with_group is not None:
            os.killpg(with_group, signal.SIGKILL)
        process.wait(timeout=60)
        _kill_leftover_ray(with_group)


def _kill_leftover_ray(group: int | None) -> None:
    """Ray processes the killed driver started in its own session die with its group; make sure."""
    if group is None:
        return
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def finished_trials(run_dir: Path) -> dict[str, int]:
    storage = open_storage(run_dir)
    studies = optuna.get_all_study_summaries(storage)
    return {s.study_name: sum(t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("interrupted")
                              for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials())
            for s in studies}


@pytest.fixture(scope="module")
def uninterrupted(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run(repo_root, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_a_driver_killed_mid_tuning_resumes_without_repeating_or_losing_work(repo_root: Path, tmp_path: Path,
                                                                               uninterrupted: Path) -> None:
    suite = load_suite(repo_root / "suites" / "smoke.yaml", OVERRIDES)
    run_dir = tmp_path / suite.name / suite.hash
    kill_after_tune_rows(repo_root, tmp_path, run_dir, rows=TRIALS + 1)  # one cell done, the next under way

    killed_rows = read_results(run_dir)
    assert (killed_rows["phase"] == "tune").sum() >= TRIALS + 1 and "final" not in set(killed_rows["phase"])
    before = {path.name: path.stat().st_mtime_ns for path in (run_dir / "rows").glob("*.parquet")}

    resumed = run(repo_root, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already stored" in resumed.stderr

    # no finished trial ran again: every study holds exactly TRIALS finished trials, and old rows are untouched
    assert finished_trials(run_dir) == {f"holdout:digits:{m}": TRIALS for m in ("erm", "label_smoothing")}
    after = {path.name: path.stat().st_mtime_ns for path in (run_dir / "rows").glob("*.parquet")}
    assert all(after[name] == stamp for name, stamp in before.items())
    rows = read_results(run_dir)
    tune = rows[rows["phase"] == "tune"]
    assert len(tune) == 2 * TRIALS and tune["row_id"].is_unique and (tune["status"] == "ok").all()

    # the same tuning decisions and final results as the uninterrupted run
    rows = rows.sort_values("row_id")
    reference = read_results(uninterrupted / suite.name / suite.hash).sort_values("row_id")
    final, expected = rows[rows["phase"] == "final"], reference[reference["phase"] == "final"]
    assert list(final["row_id"]) == list(expected["row_id"])
    assert list(final["config_json"]) == list(expected["config_json"])
    assert list(final["test/accuracy"]) == list(expected["test/accuracy"])


def test_a_method_that_raises_is_stored_as_failed_and_the_suite_goes_on(repo_root: Path, tmp_path: Path) -> None:
    # tuning trials (40 steps) raise at step 3; the final run (88 steps) of the 40-step variant raises at step 40
    overrides = ("methods=[{name: erm}, {name: fails_at_step, label: early, config: {step: 3}}, "
                 "{name: fails_at_step, label: late, config: {step: 40}}]", "tuning.trials=2", "final.seeds=[0]")
    env = {**os.environ, "HARNESS_PLUGINS": "tests.failing_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, "-m", "harness.run", "suites/smoke.yaml", "--out", str(tmp_path), "--no-dashboard"]
    for override in overrides:
        args += ["--set", override]
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]  # done, but with failed runs
    import tests.failing_plugin  # noqa: F401  (registers the method here too, to resolve the suite)

    suite = load_suite(repo_root / "suites" / "smoke.yaml", overrides)
    rows = read_results(tmp_path / suite.name / suite.hash)
    rows = {(method, phase): group for (method, phase), group in rows.groupby(["method", "phase"])}
    early_trials, early_final = rows[("early", "tune")], rows[("early", "final")]
    assert len(early_trials) == 2 and (early_trials["status"] == "failed").all()  # every trial stored, as failed
    assert early_trials["error"].str.contains("RuntimeError: injected failure at step 3").all()
    assert list(early_final["error"]) == ["no successful tuning trial to take a config from"]
    late_trials, late_final = rows[("late", "tune")], rows[("late", "final")]
    assert (late_trials["status"] == "ok").all() and list(late_final["status"]) == ["failed"]
    assert "injected failure at step 40" in late_final["error"].iloc[0]
    assert (rows[("erm", "tune")]["status"] == "ok").all() and list(rows[("erm", "final")]["status"]) == ["ok"]
    from harness.leaderboard import leaderboard

    board = leaderboard(read_results(tmp_path / suite.name / suite.hash)).set_index("method")
    assert board.loc["erm", "rank"] == 1 and board.loc[["early", "late"], "rank"].isna().all()
    assert (board.loc[["early", "late"], "n"] == 0).all() and (board.loc[["early", "late"], "n_failed"] == 1).all()
    assert proc.stdout.count("failed: incomplete") == 2  # the printed leaderboard marks both cells


def test_a_training_worker_killed_mid_run_resumes_from_its_checkpoint(repo_root: Path, tmp_path: Path) -> None:
    """Final runs train 88 steps (22 an epoch) with a checkpoint each epoch; `dies` kills its worker at
    step 50, after the epoch-2 checkpoint. `lives` is the same run whose marker exists: it never dies."""
    died, spared = tmp_path / "died", tmp_path / "spared"
    spared.touch()
    overrides = (f"methods=[{{name: dies_once, label: dies, config: {{step: 50, marker: '{died}'}}}}, "
                 f"{{name: dies_once, label: lives, config: {{step: 50, marker: '{spared}'}}}}]",
                 "tuning.trials=1", "final.seeds=[0]", "final.checkpoint_every=1", "final.max_failures=1")
    env = {**os.environ, "HARNESS_PLUGINS": "tests.failing_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, "-m", "harness.run", "suites/smoke.yaml", "--out", str(tmp_path), "--no-dashboard"]
    for override in overrides:
        args += ["--set", override]
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert died.exists()  # the worker did die
    import tests.failing_plugin  # noqa: F401

    suite = load_suite(repo_root / "suites" / "smoke.yaml", overrides)
    rows = read_results(tmp_path / suite.name / suite.hash)
    final = rows[rows["phase"] == "final"].set_index("method")
    assert (final["status"] == "ok").all() and len(final) == 2
    # it resumed from a checkpoint, not from scratch: epoch 2's, or epoch 1's if the worker died before
    # Train had registered the newer one (it dies 6 steps after saving it)
    assert final.loc["dies", "train/resumed_from_epoch"] in (1, 2)
    assert final.loc["lives", "train/resumed_from_epoch"] == -1
    # the resumed run continued exactly where its checkpoint was: the same result as the run that never died
    for column in ("train/steps", "train/samples_seen", "train/final_loss", "test/accuracy", "test/nll"):
        assert final.loc["dies", column] == final.loc["lives", column], column


def fill_disk(directory: Path) -> Path:
    """Write zeros into `directory` until its filesystem is full; return the filler file."""
    filler = directory / "filler"
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (1 << 20))
            out.flush()
    return filler


@dataclass
class SmallDisk:
    """Where a run writes, and how its disk fills up mid-run: a 64 MiB tmpfs filled with zeros where this
    machine lets the test mount one (root), else the driver's row writes failing with ENOSPC once told to
    (tests/disk_full_plugin.py)."""

    root: Path
    env: dict[str, str]
    fill: Callable[[], None]
    free: Callable[[], None]


@pytest.fixture
def small_disk(tmp_path: Path, repo_root: Path) -> Iterator[SmallDisk]:
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                                            capture_output=True).returncode == 0:
        def fill() -> None:
            fill_disk(mount)

        yield SmallDisk(mount, dict(os.environ), fill, (mount / "filler").unlink)
        subprocess.run(["umount", "-l", str(mount)], check=False)
        return
    flag = tmp_path / "disk-is-full"
    env = {**os.environ, "HARNESS_PLUGINS": "tests.disk_full_plugin", "HARNESS_TEST_DISK_FULL": str(flag),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    yield SmallDisk(mount, env, flag.touch, flag.unlink)


def test_a_full_disk_mid_run_stops_with_a_clear_error_and_resume_loses_no_row(repo_root: Path,
                                                                            small_disk: SmallDisk) -> None:
    suite = load_suite(repo_root / "suites" / "smoke.yaml", OVERRIDES)
    run_dir = small_disk.root / suite.name / suite.hash
    process = subprocess.Popen(command(small_disk.root), cwd=repo_root, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True, env=small_disk.env)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            if (run_dir / "rows").exists() and len(list((run_dir / "rows").glob("tune_*.parquet"))) >= 2:
                break
            time.sleep(0.2)
        small_disk.fill()
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert process.returncode == 3, stderr[-3000:]
    assert "No space left on device" in stderr and "rerun with --resume" in stderr, stderr[-3000:]
    stored = read_results(run_dir)
    small_disk.free()

    resumed = run(repo_root, small_disk.root, "--resume")

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_results(run_dir)
    assert rows["row_id"].is_unique and (rows["status"] == "ok").all()
    assert (rows["phase"] == "tune").sum() == 2 * TRIALS and (rows["phase"] == "final").sum() == 2
    assert set(stored["row_id"]) <= set(rows["row_id"])  # no row stored before the disk filled was lost
