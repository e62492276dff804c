"""A protocol, a metric and a method from outside the harness, each one file in tests/, run together.

The smoke suite runs with `tests/toy_protocol.py` (small_holdout), `tests/toy_metric.py` (a lower-is-better
column whose name does not say so) and `tests/toy_method.py` (toy_pseudo_labels, which needs a teacher),
loaded only through $HARNESS_PLUGINS, exactly as a third party would. The engine, the runner, the store, the
leaderboard and the dashboard name none of them, so this fails if any layer still hard-codes its own kinds.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.plugins import PLUGINS_ENV

ROOT = Path(__file__).resolve().parent.parent
TOY_COLUMN = "test/mean_wrong_confidence"
PLUGINS = "tests.toy_protocol,tests.toy_metric,tests.toy_method"
OVERRIDES = [
    "methods=[{name: erm}, {name: toy_pseudo_labels}]",
    "protocols=[holdout, small_holdout]",
    "evaluation.metrics=[accuracy, toy_wrong_confidence]",
    f"benchmarks[0].primary_metric={TOY_COLUMN}",
    "tuning.trials=2",
    "final.seeds=[0, 1]",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plugins")
    env = {**os.environ, PLUGINS_ENV: PLUGINS,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]
    done = subprocess.run([sys.executable, "-m", "harness.run", "suites/smoke.yaml", "--out", str(out), *sets],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (found,) = list((out / "smoke").iterdir())
    return found


@pytest.fixture(scope="module")
def final_rows(run_dir: Path) -> pd.DataFrame:
    from harness.store import read_results

    rows = read_results(run_dir)
    return rows[rows["phase"] == "final"]


def test_every_toy_cell_trained_and_was_scored_by_the_toy_metric(final_rows: pd.DataFrame) -> None:
    cells = {(p, m) for p, m in zip(final_rows["protocol"], final_rows["method"], strict=True)}
    assert cells == {(p, m) for p in ("holdout", "small_holdout") for m in ("erm", "toy_pseudo_labels")}
    assert (final_rows["status"] == "ok").all(), final_rows[["row_id", "error"]]
    assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in final_rows[TOY_COLUMN])


def test_the_toy_protocol_tuned_without_the_test_split(run_dir: Path) -> None:
    from harness.store import read_results

    rows = read_results(run_dir)
    trials = rows[(rows["phase"] == "tune") & (rows["protocol"] == "small_holdout")]
    assert len(trials) == 4 and (trials["status"] == "ok").all()
    assert all("test" not in str(read).split(",") for read in trials["splits_read"])


def test_the_leaderboard_ranks_the_toy_metric_lowest_first(final_rows: pd.DataFrame, run_dir: Path) -> None:
    """A reader that loads the plugin (as the run's own leaderboard and dashboard did) ranks it lowest first;
    without it the column is undeclared and `harness.columns` falls back to the old name guess."""
    import tests.toy_metric  # noqa: F401  (declares the column in this process, as $HARNESS_PLUGINS would)
    from harness.leaderboard import leaderboard
    from harness.store import read_results

    board = leaderboard(read_results(run_dir), primary=TOY_COLUMN)
    for protocol, group in board.groupby("protocol"):
        means = group.sort_values("rank")[f"{TOY_COLUMN}:mean"].tolist()
        assert means == sorted(means), (protocol, group[["method", "rank", f"{TOY_COLUMN}:mean"]])
        expected = final_rows[final_rows["protocol"] == protocol].groupby("method")[TOY_COLUMN].mean()
        assert group.sort_values("rank")["method"].iloc[0] == expected.idxmin()


def test_the_dashboard_orders_the_toy_metric_and_names_the_toy_protocol(final_rows: pd.DataFrame,
                                                                       run_dir: Path) -> None:
    page = (run_dir / "dashboard" / "index.html").read_text()
    assert "small holdout (64 val examples)" in page  # the protocol's own label, not just its name
    assert "mean_wrong_confidence ↓" in page
    for protocol in ("holdout", "small_holdout"):
        scores = final_rows[final_rows["protocol"] == protocol].groupby("method")[TOY_COLUMN].mean()
        best_first = scores.sort_values().index.tolist()
        tables = re.findall(r'<table class="leaderboard".*?</table>', page, flags=re.S)
        shown = [re.findall(r'<th class="method" scope="row">([\w]+)', table) for table in tables]
        assert best_first in shown, (protocol, best_first, shown)
