"""bench/verdict_error_rates.py at toy size, so the bench cannot rot: both tables render, with one row per
test and n, and the verdicts' test never rejects more normal nulls than the plain t test."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_bench_renders_its_tables_at_toy_size(capsys: pytest.CaptureFixture) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "bench"))
        bench = importlib.import_module("verdict_error_rates")
    assert bench.main(["--draws", "2000", "--sizes", "3", "5"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| 3 |", "| 5 |"))]
    assert len(rows) == 6 and "| Hall | 98.7% |" in out
    plain, _, both = (float(row.split("|")[3].strip().rstrip("%")) for row in rows[:3])
    assert both <= plain
