"""Suite time end to end, and where it goes: `python -m harness.run SUITE` against the issue's targets.

Each suite runs once, in a fresh interpreter, exactly as `python -m harness.run SUITE --out TMP` (the child
wraps the driver's phase functions in timers before calling `harness.run.main`, and changes nothing else).
The parent times the whole process, then splits it with the timers and the run's own rows: trial clocks,
final runs' loop and evaluation seconds, teachers. What no timer covers is reported as such.

    python bench/suite_time.py [--suite suites/smoke.yaml --suite suites/quickstart.yaml]
                               [--set KEY.PATH=VALUE ...] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doc_sections import table, write_section

SECTION = "suite_time"
SECTION_TITLE = "## Suite time: `{name}` end to end, and where it goes (bench/suite_time.py)"
TARGETS_S = {"smoke": 45.0, "quickstart": 240.0}  # suite name -> seconds of `python -m harness.run`
DEFAULT_SUITES = (Path("suites/smoke.yaml"), Path("suites/quickstart.yaml"))

# (module, attribute, label): the driver-side steps timed in the child, in the order a run reaches them
TIMED = (
    ("harness.cluster", "connect", "`ray.init` (`cluster.connect`)"),
    ("harness.runner:SuiteRunner", "tune_all", "tuning phase (`SuiteRunner.tune_all`)"),
    ("harness.runner:SuiteRunner", "final_all", "final phase (`SuiteRunner.final_all`)"),
    ("harness.store:ResultStore", "consolidate", "consolidate the store (`ResultStore.consolidate`)"),
    ("harness.cluster", "shutdown", "Ray shutdown (`cluster.shutdown`)"),
    ("harness.store", "read_results", "read the results (`read_results`)"),
    ("harness.leaderboard", "leaderboard", "leaderboard (`harness.leaderboard.leaderboard`)"),
    ("harness.report", "print_leaderboard", "print the leaderboard"),
    ("dashboards", "build_dashboard", "dashboard, whole (`build_dashboard`)"),
    ("dashboards.page", "render_page", "dashboard: render the page (figures, tables)"),
    ("dashboards.page", "embed_json", "dashboard: figures to JSON (`embed_json`)"),
    ("plotly.offline", "get_plotlyjs", "dashboard: plotly.js read (`get_plotlyjs`)"),
    ("dashboards.page", "write_atomic", "dashboard: files written (`write_atomic`)"),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the child: harness.run with timers


def install_timers(record: Callable[[str, float, float], None]) -> None:
    """Wrap each `TIMED` function so every call reports (label, start epoch s, seconds); nothing else changes."""
    import importlib

    for where, attr, label in TIMED:
        module_name, _, class_name = where.partition(":")
        owner: Any = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
        setattr(owner, attr, timed(getattr(owner, attr), label, record))


def timed(function: Callable[..., Any], label: str, record: Callable[[str, float, float], None]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started, clock = time.time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record(label, started, time.perf_counter() - clock)

    return wrapper


def child(argv: Sequence[str]) -> int:
    """`suite_time.py --child TIMINGS.json -- harness.run arguments...`: run the suite, then write the timers."""
    timings_path, run_args = Path(argv[0]), list(argv[2:])
    calls: list[tuple[str, float, float]] = []
    entered = time.time()
    install_timers(lambda label, started, seconds: calls.append((label, started, seconds)))
    from harness.run import main as harness_run

    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # as `python -m harness.run` sets it
    main_started = time.time()
    code = harness_run(run_args)
    timings_path.write_text(json.dumps({"entered": entered, "main_started": main_started, "main_ended": time.time(),
                                        "calls": calls}))
    return code


# ---------------------------------------------------------------- the parent: run, time, split


@dataclass
class SuiteTiming:
    suite: str
    name: str
    command: str
    wall_s: float
    returncode: int
    started: float  # epoch seconds when the child process was started
    timings: dict[str, Any]
    rows: Any  # the run's rows (a pandas DataFrame)
    cores: int
    overrides: tuple[str, ...] = ()

    def seconds(self, label: str) -> float:
        return sum(seconds for name, _, seconds in self.timings.get("calls", []) if name == label)

    def label(self, attr: str) -> str:
        return next(label for _, name, label in TIMED if name == attr)


def run_suite(suite: Path, overrides: Sequence[str], scratch: Path) -> SuiteTiming:
    """Run the suite in a fresh interpreter, timed from outside; read its timers and rows."""
    from harness.store import read_results
    from harness.suite import load_suite

    loaded = load_suite(suite, overrides)
    out, timings = scratch / loaded.name, scratch / f"{loaded.name}-timings.json"
    sets = [arg for item in overrides for arg in ("--set", item)]
    run_args = [str(suite), "--out", str(out), *sets]
    command = " ".join(["python -m harness.run", *run_args[:1], "--out", "/tmp/...", *run_args[3:]])
    log(f"{command}")
    started, clock = time.time(), time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", str(timings), "--", *run_args],
                          stdout=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - clock
    log(f"    {wall:.1f} s, exit code {done.returncode}")
    data = json.loads(timings.read_text()) if timings.exists() else {}
    run_dir = out / loaded.name / loaded.hash
    rows = read_results(run_dir) if (run_dir / "rows").exists() else None
    return SuiteTiming(str(suite), loaded.name, command, wall, done.returncode, started, data, rows,
                       os.cpu_count() or 1, tuple(overrides))


def phase_rows(t: SuiteTiming, phase: str) -> Any:
    if t.rows is None or "phase" not in t.rows:
        return None
    return t.rows[t.rows["phase"] == phase]


def column_sum(rows: Any, column: str) -> float:
    return float(rows[column].fillna(0).sum()) if rows is not None and column in rows else 0.0


def breakdown(t: SuiteTiming) -> list[list[str]]:
    """Where the suite's seconds went: the timers in run order, each phase split by its rows."""
    data = t.timings
    rows = [["whole process (`python -m harness.run`)", f"{t.wall_s:.1f}", ""]]
    if not data:
        return rows + [["(the child wrote no timings: it failed before the suite finished)", "", ""]]
    rows.append(["interpreter start and imports (harness, torch, Ray, dashboards)",
                 f"{data['main_started'] - t.started:.1f}", ""])
    connect = next((s for label, s, _ in data["calls"] if label == t.label("connect")), data["main_ended"])
    rows.append(["suite load, input checks (before `ray.init`)", f"{connect - data['main_started']:.1f}", ""])
    trials, finals, teachers = phase_rows(t, "tune"), phase_rows(t, "final"), phase_rows(t, "teacher")
    for _, attr, label in TIMED:
        seconds = t.seconds(label)
        note = ""
        if attr == "tune_all" and trials is not None:
            inside = column_sum(trials, "wall_s")
            note = (f"{len(trials)} trials; their own clocks sum to {inside:.1f} s ({inside / max(1, len(trials)):.2f} s "
                    f"each), so at {t.cores} trials at once Tune spends about {seconds - inside / t.cores:.1f} s "
                    "outside them (actor starts, searcher, scheduler, result handling, tune-phase teachers)")
        if attr == "final_all" and finals is not None:
            walls, loops = column_sum(finals, "wall_s"), column_sum(finals, "train/wall_s")
            battery = column_sum(finals, "eval/wall_s")
            note = (f"{len(finals)} runs; their walls sum to {walls:.1f} s: training loops {loops:.1f} s, evaluation "
                    f"battery {battery:.1f} s, the rest {walls - loops - battery:.1f} s ({(walls - loops - battery) / max(1, len(finals)):.1f} s "
                    "a run: Ray Train's worker group start, data read, model build, reports, checkpoints, shutdown)")
        if seconds or note:
            rows.append([label, f"{seconds:.1f}", note])
    if teachers is not None and len(teachers):
        rows.append([f"teachers ({len(teachers)}, Ray tasks alongside the phases; inside the phase times above)",
                     f"{column_sum(teachers, 'wall_s'):.1f}", f"training loops {column_sum(teachers, 'train/wall_s'):.1f} s"])
    top = {t.label(a) for a in ("connect", "tune_all", "final_all", "consolidate", "shutdown", "read_results",
                                "leaderboard", "print_leaderboard", "build_dashboard")}
    covered = (data["main_started"] - t.started) + (connect - data["main_started"]) + sum(t.seconds(label) for label in top)
    rows.append(["not covered by a timer (run directory, suite.yaml, progress lines, process exit)",
                 f"{t.wall_s - covered:.1f}", ""])
    return rows


def section_name(t: SuiteTiming) -> str:
    """Each suite has its own section, so timing one suite leaves the others' figures in place."""
    return f"{SECTION}-{t.name}"


def report_markdown(t: SuiteTiming, write: Path | None, load: tuple[float, float]) -> str:
    """One suite's section: its command, the target, the verdict and the breakdown."""
    target = TARGETS_S.get(t.name)
    verdict = "" if target is None else ("met" if t.wall_s <= target and t.returncode == 0 else "**missed**")
    overrides = "".join(f" --set {item}" for item in t.overrides)
    command = f"python bench/suite_time.py --suite {t.suite}{overrides}" + (f" --write {write}" if write else "")
    verdicts = [[f"`{t.command}`", f"{t.wall_s:.1f}", f"<= {target:g}" if target else "", verdict, str(t.returncode)]]
    parts = [SECTION_TITLE.format(name=t.name), "", f"Reproduce: `{command}`", "",
             f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {os.cpu_count()} cores; 1-minute load "
             f"average {load[0]:.2f} at the start, {load[1]:.2f} at the end (the machine is shared: seconds are upper "
             "bounds of what an idle machine takes, and the lead reruns the command on an idle machine).", "",
             table(["Suite run", "Seconds", "Target", "Verdict", "Exit code"], verdicts), "",
             table(["Part", "Seconds", "What"], breakdown(t))]
    return "\n".join(parts) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/suite_time.py", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", dest="suites", type=Path, action="append", default=None,
                        help="suite file, repeatable (default: suites/smoke.yaml and suites/quickstart.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a value of every suite, as `python -m harness.run --set` does")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE",
                        help="update this file's suite_time section, e.g. docs/benchmarks.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    args = parse_args(argv)
    timings = []
    with tempfile.TemporaryDirectory(prefix="harness-suite-time-") as scratch:
        for suite in args.suites or list(DEFAULT_SUITES):
            load_start = os.getloadavg()[0]
            timings.append(run_suite(suite, args.overrides, Path(scratch)))
            section = report_markdown(timings[-1], args.write, (load_start, os.getloadavg()[0]))
            print(section)
            if args.write:
                write_section(args.write, section, section_name(timings[-1]))
                log(f"wrote the {section_name(timings[-1])} section of {args.write}")
    return 0 if all(t.returncode in (0, 1) for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
