"""A metric from outside the harness (`tests/toy_metric.py`, lower is better, a name that holds none of the
substrings the harness once guessed direction from) is ranked and shown the right way round everywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import tests.toy_metric  # noqa: F401  (registers toy_wrong_confidence in this process, as $HARNESS_PLUGINS would)
from dashboards.page import render_page
from dashboards.table import leaderboard_table
from harness.columns import LEGACY_LOWER_IS_BETTER_MARKERS, column_info
from harness.evaluation import METRICS, EvalInputs, EvaluationSettings, evaluate
from harness.leaderboard import leaderboard
from harness.plugins import PLUGINS_ENV
from tests.toy_metric import NAME

TOY = "test/mean_wrong_confidence"
ROOT = Path(__file__).resolve().parent.parent
# seed -> method -> toy score: C is surest least often when wrong (best), B most often (worst)
SCORES = {0: {"erm": 0.30, "B": 0.52, "C": 0.11}, 1: {"erm": 0.34, "B": 0.55, "C": 0.12}, 2: {"erm": 0.31, "B": 0.50, "C": 0.15}}


def toy_rows() -> pd.DataFrame:
    return pd.DataFrame.from_records([
        {"benchmark": "digits", "method": method, "seed": seed, "phase": "final", "status": "ok",
         "primary_metric": TOY, TOY: value, "test/accuracy": 0.9 - value / 10}
        for seed, by_method in SCORES.items() for method, value in by_method.items()
    ])


def test_the_toy_column_is_declared_lower_is_better_which_its_name_does_not_say() -> None:
    info = column_info(TOY)
    assert info.declared and info.owner == NAME
    assert (info.higher_is_better, info.unit, info.detail) == (False, "fraction", False)
    assert not any(marker in TOY for marker in LEGACY_LOWER_IS_BETTER_MARKERS)  # the old guess said "higher"


def test_the_toy_metric_evaluates_to_its_declared_column() -> None:
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 4
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    inputs = EvalInputs(model=model, images=images, labels=labels, device=torch.device("cpu"),
                        settings=EvaluationSettings())
    columns = evaluate(inputs, ["accuracy", NAME])
    assert METRICS.get(NAME).column_names("test") == (TOY,)
    assert 0.0 < columns[TOY] <= 1.0 and columns["test/accuracy"] < 1.0


def test_the_leaderboard_ranks_the_lowest_toy_score_first() -> None:
    board = leaderboard(toy_rows(), primary=TOY)
    assert board["method"].tolist() == ["C", "erm", "B"]
    assert board["rank"].tolist() == [1.0, 2.0, 3.0]
    by_method = board.set_index("method")
    assert by_method.loc["C", "vs_baseline:p_improve"] == 1.0  # every C run is lower than every erm run
    assert by_method.loc["B", "vs_baseline:p_improve"] == 0.0


def test_the_dashboard_table_orders_and_labels_the_toy_metric_lower_is_better() -> None:
    board = leaderboard(toy_rows(), primary=TOY)
    html = leaderboard_table("digits", board, [TOY, "test/accuracy"], TOY, baseline="erm")
    assert "Ranked by test/mean_wrong_confidence (lower is better)" in html
    assert f'title="{TOY}: lower is better' in html and "mean_wrong_confidence ↓" in html
    assert re.findall(r'<th class="method" scope="row">(\w+)', html) == ["C", "erm", "B"]
    best = re.search(r'<td class="num primary best" title="([^"]+)"', html)
    assert best is not None and best[1].startswith(f"{TOY}: mean 0.1266")  # C's mean, the lowest


def test_the_page_shows_the_toy_metric_in_the_summary_table_not_as_a_battery_figure() -> None:
    page = render_page(toy_rows())
    table = page[page.index('<table class="leaderboard"'):]
    assert "mean_wrong_confidence ↓" in table
    assert re.findall(r'<th class="method" scope="row">(\w+)', table)[:3] == ["C", "erm", "B"]
    assert "mean_wrong_confidence" not in page[: page.index('<table class="leaderboard"')].split("<nav>")[-1]


@pytest.mark.parametrize("plugins", ["tests.toy_metric", ""])
def test_a_suite_selects_the_toy_metric_only_when_its_plugin_is_loaded(plugins: str) -> None:
    """In a fresh process, the suite's metric names are checked after plugin discovery."""
    env = {**os.environ, PLUGINS_ENV: plugins,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    script = ("from harness.suite import load_suite; import sys; "
              f"s = load_suite(sys.argv[1], ['evaluation.metrics=[accuracy,{NAME}]']); "
              "print(s.evaluation.metrics)")
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "suites" / "smoke.yaml")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if plugins:
        assert done.returncode == 0 and NAME in done.stdout, done.stderr
    else:
        assert done.returncode != 0 and f"unknown metric '{NAME}'" in done.stderr, done.stderr
