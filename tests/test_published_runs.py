"""The published runs in docs/leaderboard stay readable by today's code: same suite hash, same leaderboard.

A refactor that changes a hash strands every published run (and every user's `--resume`); one that changes
an aggregate silently rewrites the published numbers. The golden leaderboards in tests/golden/ were written
by the code that published the runs; regenerate them only in a commit that means to change the numbers
(`HARNESS_UPDATE_GOLDEN=1 pytest tests/test_published_runs.py`) and say why in its message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.leaderboard import leaderboard, metric_columns
from harness.store import read_results
from harness.suite import load_suite, validate_suite

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "docs" / "leaderboard"
GOLDEN = Path(__file__).resolve().parent / "golden" / "leaderboards"
RUNS = sorted(p.parent for p in PUBLISHED.glob("*/*/suite.yaml"))


def _run_id(run_dir: Path) -> str:
    return f"{run_dir.parent.name}/{run_dir.name}"


def published_leaderboard(run_dir: Path) -> pd.DataFrame:
    """The leaderboard a dashboard of this run shows: every metric a final row carries, each benchmark's primary."""
    suite = yaml.safe_load((run_dir / "suite.yaml").read_text())
    primary = {b.get("name") or f"{b['dataset']}-{b['model']}": b.get("primary_metric", "test/accuracy")
               for b in suite["benchmarks"]}
    rows = read_results(run_dir)
    final = rows[rows["phase"] == "final"]
    metrics = [m for m in metric_columns(final) if final[m].notna().any()]
    ran = rows[rows["phase"].isin(["final", "tune"])]
    return leaderboard(ran, primary=primary, metrics=metrics, baseline="erm").reset_index(drop=True)


def test_there_are_published_runs() -> None:
    assert len(RUNS) >= 14, RUNS


@pytest.mark.parametrize("run_dir", RUNS, ids=_run_id)
def test_published_suite_keeps_its_hash(run_dir: Path) -> None:
    frozen = validate_suite(yaml.safe_load((run_dir / "suite.yaml").read_text()), source=str(run_dir))
    assert frozen.hash == run_dir.name
    shipped = ROOT / "suites" / f"{run_dir.parent.name}.yaml"
    assert load_suite(shipped).hash == run_dir.name, f"{shipped} no longer hashes to its published run"


@pytest.mark.parametrize("run_dir", RUNS, ids=_run_id)
def test_published_run_rebuilds_the_same_leaderboard(run_dir: Path) -> None:
    golden = GOLDEN / f"{run_dir.parent.name}-{run_dir.name}.parquet"
    table = published_leaderboard(run_dir)
    if os.environ.get("HARNESS_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(golden, index=False)
    expected = pd.read_parquet(golden)
    assert list(table.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, check_exact=False, rtol=1e-9, atol=1e-12)
