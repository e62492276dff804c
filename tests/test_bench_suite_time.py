"""bench/suite_time.py without running a suite: the timers wrap and report, and the breakdown splits a run's
seconds by its timers and rows (toy numbers), names the target and what no timer covers."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def suite_time() -> ModuleType:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "bench"))  # the bench scripts import their siblings by name
        return importlib.import_module("suite_time")


def test_a_timed_function_reports_each_call_and_returns_its_value(suite_time: ModuleType) -> None:
    calls: list[tuple[str, float, float]] = []
    wrapped = suite_time.timed(lambda x: x * 2, "double", lambda *call: calls.append(call))
    assert wrapped(21) == 42 and wrapped(1) == 2
    assert [label for label, _, _ in calls] == ["double", "double"] and all(s >= 0 for _, _, s in calls)


def test_every_timed_function_exists(suite_time: ModuleType) -> None:
    for where, attr, _ in suite_time.TIMED:  # a renamed driver step must rename its timer
        module, _, owner = where.partition(":")
        target = importlib.import_module(module)
        assert callable(getattr(getattr(target, owner) if owner else target, attr)), f"{where}.{attr}"


def test_the_breakdown_splits_the_run_by_timers_and_rows(suite_time: ModuleType) -> None:
    label = {attr: name for _, attr, name in suite_time.TIMED}
    t0 = time.time()
    calls = [(label["connect"], t0 + 4, 3.0), (label["tune_all"], t0 + 7, 10.0), (label["final_all"], t0 + 17, 20.0),
             (label["build_dashboard"], t0 + 38, 1.5), (label["render_page"], t0 + 38, 1.0)]
    rows = pd.DataFrame({"phase": ["tune", "tune", "final", "final", "teacher"], "wall_s": [4.0, 6.0, 12.0, 14.0, 5.0],
                         "train/wall_s": [None, None, 3.0, 4.0, 2.0], "eval/wall_s": [None, None, 1.0, 1.0, None]})
    timing = suite_time.SuiteTiming("suites/smoke.yaml", "smoke", "python -m harness.run suites/smoke.yaml", 42.0, 0,
                                    t0, {"main_started": t0 + 2, "main_ended": t0 + 40, "calls": calls}, rows, 2)
    table = {row[0]: row for row in suite_time.breakdown(timing)}
    assert table["interpreter start and imports (harness, torch, Ray, dashboards)"][1] == "2.0"
    assert table["suite load, input checks (before `ray.init`)"][1] == "2.0"
    assert "2 trials; their own clocks sum to 10.0 s" in table[label["tune_all"]][2]
    assert "at 2 trials at once Tune spends about 5.0 s outside them" in table[label["tune_all"]][2]
    assert "training loops 7.0 s, evaluation battery 2.0 s, the rest 17.0 s (8.5 s a run" in table[label["final_all"]][2]
    # 42 s in all: 2 + 2 before ray.init, 3 + 10 + 20 + 1.5 timed at the top level (render_page is inside the dashboard)
    assert table["not covered by a timer (run directory, suite.yaml, progress lines, process exit)"][1] == "3.5"
    section = suite_time.report_markdown(timing, Path("docs/benchmarks.md"), (1.0, 2.0))
    assert "| `python -m harness.run suites/smoke.yaml` | 42.0 | <= 45 | met | 0 |" in section
    assert "Reproduce: `python bench/suite_time.py --suite suites/smoke.yaml --write docs/benchmarks.md`" in section
    assert suite_time.section_name(timing) == "suite_time-smoke"
    assert "load average 1.00 at the start, 2.00 at the end" in section
