"""`python -m harness.run SUITE.yaml`: tune, retrain, evaluate, store and rank every method of a suite.

Exit codes: 0 done, 1 done but some final runs failed, 2 bad input (nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from harness.cluster import ClusterInfo
from harness.errors import HarnessInputError
from harness.report import wide_console
from harness.storage import Storage, resolve_storage
from harness.suite import Suite, load_suite, suite_as_yaml

EXIT_OK, EXIT_RUN_FAILURES, EXIT_BAD_INPUT = 0, 1, 2


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

        check_study_spaces(run_dir, cell_spaces(suite))
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = wide_console(stderr=True)
    try:
        suite = load_suite(args.suite, args.overrides)
        run_dir = run_dir_for(suite, args.out)
        check_inputs(suite, run_dir, args.resume)
    except HarnessInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return execute(suite, run_dir, args, console)


def execute(suite: Suite, run_dir: Path, args: argparse.Namespace, console: Console) -> int:
    from harness import cluster
    from harness.leaderboard import leaderboard
    from harness.progress import Progress
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
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "suite.yaml").write_text(suite_as_yaml(suite))
    progress.say(f"ray: {info.nodes} node(s), {info.cpus:g} CPUs, {info.gpus:g} GPUs")
    try:
        SuiteRunner(suite, run_dir, progress, info).run()  # it opens `output.storage` as checked above
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
