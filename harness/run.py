"""`python -m harness.run SUITE.yaml`: tune, retrain, evaluate, store and rank every method of a suite.

Exit codes: 0 done, 1 done but some final runs failed, 2 bad input (nothing written) or a run directory
that another live run is writing, 3 stopped because the store could not be written (a full disk: every
row stored before is intact, and `--resume` continues once the cause is fixed).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from harness import cluster
from harness.cluster import ClusterInfo
from harness.errors import HarnessInputError
from harness.progress import Progress
from harness.report import wide_console
from harness.storage import Storage, resolve_storage
from harness.store import ResultStore, StoreWriteError
from harness.suite import Suite, load_suite, suite_as_yaml
from harness.writer_lock import WriterLock

EXIT_OK, EXIT_RUN_FAILURES, EXIT_BAD_INPUT, EXIT_STORE_FAILED = 0, 1, 2, 3


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.run", description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="suite YAML file, e.g. suites/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a suite value, e.g. --set tuning.trials=4 (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="results root (default: the suite's output.dir)")
    parser.add_argument("--resume", action="store_true", help="continue this suite's run, skipping finished work")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    parser.add_argument("--no-dashboard", action="store_true", help="do not render the HTML dashboard")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    return parser.parse_args(argv)


def run_dir_for(suite: Suite, out: Path | None) -> Path:
    return (out or Path(suite.output.dir)) / suite.name / suite.hash


def check_inputs(suite: Suite, run_dir: Path, resume: bool) -> Storage:
    """Everything that can be wrong with the input is found here, before anything is written.

    Returns the run's Ray Train / Tune scratch storage, opened (so a bad `output.storage` stops here)."""
    from harness.data import DATASETS

    for index, bench in enumerate(suite.benchmarks):
        try:
            DATASETS.get(bench.dataset).check_available()
        except HarnessInputError as error:
            raise HarnessInputError(f"benchmarks[{index}].dataset ({bench.dataset}): {error}") from None
    rows = run_dir / "rows"
    if not resume and rows.exists() and any(rows.iterdir()):
        raise HarnessInputError(f"{run_dir} already holds results of this suite; pass --resume to continue it, "
                                "or --out DIR to start a separate run")
    if resume:
        from harness.plan import cell_spaces
        from harness.tuning import check_study_spaces

        check_study_spaces(run_dir, cell_spaces(suite))  # after `repair_run_dir`: the journal reads
    return resolve_storage(suite.output.storage, run_dir, suite.name, suite.hash)


def check_cluster_fits(suite: Suite, info: ClusterInfo) -> None:
    """One tuning trial and one final run must each fit in the cluster found at connect: Ray would
    otherwise queue them forever. (An autoscaling cluster must be at size when the suite starts.)"""
    tuning, final = suite.tuning, suite.final
    needs = (("tuning trial", "tuning.cpus_per_trial / tuning.gpus_per_trial", tuning.cpus_per_trial,
              tuning.gpus_per_trial),
             ("final run", "final.workers x final.cpus_per_worker / final.gpus_per_worker",
              final.workers * final.cpus_per_worker, final.workers * final.worker_gpus))
    for unit, keys, cpus, gpus in needs:
        short = info.shortfall(cpus, gpus)
        if short is not None:
            raise HarnessInputError(f"{keys}: one {unit} {short} ({info.nodes} node(s)); lower it, "
                                    "or run on a larger cluster (--address)")


def repair_run_dir(run_dir: Path, resume: bool, console: Console) -> None:
    """On `--resume`: set aside unreadable row files and cut a damaged studies journal back to its last
    whole record, naming each, so their work runs again instead of crashing the run or vanishing."""
    from harness.tuning import repair_journal

    if not resume:
        return
    for moved in ResultStore(run_dir).set_aside_unreadable():
        console.print(f"[yellow]warning[/yellow]: rows/{moved.name} is unreadable ({moved.reason}); moved to "
                      f"{moved.moved_to}, and its work runs again", markup=True, highlight=False)
    repaired = repair_journal(run_dir)
    if repaired:
        console.print(f"[yellow]warning[/yellow]: {repaired}", markup=True, highlight=False)


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def disk_error(error: BaseException) -> StoreWriteError | None:
    """The store-write error behind `error` (a full disk anywhere in its chain of causes), or None."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, StoreWriteError):
            return cause
        if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS:
            return StoreWriteError(cause.errno, f"{cause}; every row stored before it is intact; free some space, "
                                                "then rerun with --resume to continue the run")
        cause = cause.__cause__ or cause.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = wide_console(stderr=True)
    lock: WriterLock | None = None
    try:
        suite = load_suite(args.suite, args.overrides)
        run_dir = run_dir_for(suite, args.out)
        lock = WriterLock(run_dir)
        if run_dir.exists():  # a new run directory is locked once created, in `execute`
            lock.acquire()
            repair_run_dir(run_dir, args.resume, console)
        check_inputs(suite, run_dir, args.resume)
        return execute(suite, run_dir, args, console, lock)
    except HarnessInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StoreWriteError as error:
        print(f"error: the run stopped: {error.strerror}", file=sys.stderr)
        return EXIT_STORE_FAILED
    finally:
        if lock is not None:
            lock.release()


def execute(suite: Suite, run_dir: Path, args: argparse.Namespace, console: Console,
            lock: WriterLock | None = None) -> int:
    from harness.leaderboard import leaderboard
    from harness.report import print_leaderboard
    from harness.runner import SuiteRunner
    from harness.store import read_results

    started = time.monotonic()
    progress = Progress(console)
    progress.say(f"suite [bold]{suite.name}[/bold] ({suite.hash}) -> {run_dir}")
    try:  # before anything is written: a cluster we cannot join leaves no trace
        info = cluster.connect(args.address, verbose=args.verbose)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = args.address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        print(f"error: cannot connect to {where}: {' '.join(str(error).split())[:600]} "
              "(check --address / $RAY_ADDRESS, and RAY_AUTH_MODE / RAY_AUTH_TOKEN on token-auth clusters)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:  # still before anything is written: a trial or run the cluster can never place would wait forever
        check_cluster_fits(suite, info)
    except HarnessInputError as error:
        cluster.shutdown()
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = lock or WriterLock(run_dir)
        lock.acquire()  # two fresh runs racing to create the directory: the second stops here
        (run_dir / "suite.yaml").write_text(suite_as_yaml(suite))
        progress.say(f"ray: {info.nodes} node(s), {info.cpus:g} CPUs, {info.gpus:g} GPUs")
        SuiteRunner(suite, run_dir, progress, info).run()  # it opens `output.storage` as checked above
    except Exception as error:  # a full disk may surface through Ray Tune or Optuna, wrapped
        disk = disk_error(error)
        if disk is None:
            raise
        raise disk from error
    finally:
        cluster.shutdown()
    rows = read_results(run_dir)
    primary = {b.name: b.primary_metric for b in suite.benchmarks}
    table = leaderboard(rows, primary=primary)
    print_leaderboard(table)
    if suite.output.dashboard and not args.no_dashboard:
        from dashboards import build_dashboard

        page = build_dashboard(run_dir, title=suite.name)
        progress.say(f"dashboard: {page}")
    progress.say(f"results: {run_dir / 'results.parquet'}  (suite time {time.monotonic() - started:.0f} s)")
    failed = int(((rows["phase"] == "final") & (rows["status"] != "ok")).sum()) if "phase" in rows else 0
    if failed:
        progress.say(f"[red]{failed} final run(s) failed[/red]; see the 'error' column")
    return EXIT_RUN_FAILURES if failed else EXIT_OK


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    sys.exit(main())
