"""The static dashboard: built from a fixture store, offline, escaped, with the right tables and figures."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dashboards import NoResultsError, build_dashboard, pareto_front
from dashboards.__main__ import main as dashboards_main
from dashboards.page import embed_json, primary_metrics, render_page
from dashboards.table import format_number, shared_decimals
from harness.leaderboard import leaderboard
from harness.store import ResultStore, read_results
from tests.fixtures_results import (
    BASELINE,
    BATTERY,
    CORRUPTED_FAMILIES,
    CORRUPTION_FACTORS,
    EMPTY_BINS,
    HOSTILE_ERROR,
    HOSTILE_METHOD,
    OOD_SETS,
    SUITE_HASH,
    TEMPERATURES,
    FixtureStore,
    write_fixture_store,
)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


class LeaderboardTables(HTMLParser):
    """Collects each table of a class (`leaderboard` by default): its benchmark, protocol and, per body
    row, the text of each cell under its first class."""

    def __init__(self, table_class: str = "leaderboard") -> None:
        super().__init__()
        self.table_class = table_class
        self.tables: list[dict] = []
        self.in_leaderboard = False
        self.in_body = False
        self.row: dict | None = None
        self.cell: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "table":
            self.in_leaderboard = self.table_class in classes
            if self.in_leaderboard:
                self.tables.append({"benchmark": attributes.get("data-benchmark"),
                                    "protocol": attributes.get("data-protocol"), "rows": []})
        elif tag == "tbody" and self.in_leaderboard:
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.row = {"classes": classes, "cells": []}
        elif tag in ("td", "th") and self.row is not None:
            self.cell, self.text = (classes[0] if classes else tag), []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row["cells"].append((self.cell, " ".join("".join(self.text).split())))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables[-1]["rows"].append(self.row)
            self.row = None
        elif tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.in_leaderboard = self.in_body = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.text.append(data)


def parsed_tables(page: str, table_class: str = "leaderboard") -> list[dict]:
    parser = LeaderboardTables(table_class)
    parser.feed(page)
    return parser.tables


def leaderboard_tables(page: str) -> dict[str, list[dict]]:
    """Leaderboard rows by benchmark, for pages with a single protocol."""
    tables = [t for t in parsed_tables(page) if t["benchmark"] is not None]
    assert len({t["benchmark"] for t in tables}) == len(tables), "one table per benchmark expected"
    return {table["benchmark"]: table["rows"] for table in tables}


def tables_by_protocol(page: str) -> dict[tuple[str, str], list[dict]]:
    return {(t["benchmark"], t["protocol"]): t["rows"] for t in parsed_tables(page)}


def method_of(row: dict) -> str:
    return cell(row, "method").removesuffix("incomplete").strip()


def cell(row: dict, name: str) -> str:
    return next(text for cls, text in row["cells"] if cls == name)


def embedded_figures(page: str) -> dict:
    match = re.search(r"var figures = (\{.*?\});\n", page, flags=re.S)
    assert match, "figure data not found in the page"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[FixtureStore, Path, str]:
    store = write_fixture_store(tmp_path_factory.mktemp("run"))
    index = build_dashboard(store.run_dir)
    return store, index, index.read_text(encoding="utf-8")


# ---------------------------------------------------------------- files and offline


def test_build_writes_index_and_local_plotly(built: tuple[FixtureStore, Path, str]) -> None:
    store, index, _ = built
    assert index == store.run_dir / "dashboard" / "index.html"
    plotly_js = index.parent / "plotly.min.js"
    assert index.is_file() and plotly_js.is_file()
    assert plotly_js.stat().st_size > 1_000_000 and b"plotly.js" in plotly_js.read_bytes()[:200]
    assert not list(index.parent.glob(".tmp-*")), "temp files must not be left behind"


def test_rebuild_keeps_plotly_js_and_replaces_index(built: tuple[FixtureStore, Path, str]) -> None:
    store, index, _ = built
    plotly_js = index.parent / "plotly.min.js"
    before = plotly_js.stat().st_mtime_ns
    again = build_dashboard(store.run_dir, title="Second build")
    assert plotly_js.stat().st_mtime_ns == before, "plotly.min.js is written once, not on every build"
    assert "<title>Second build</title>" in again.read_text(encoding="utf-8")
    build_dashboard(store.run_dir)  # restore the default title for the other tests' reads


def test_page_references_no_network(built: tuple[FixtureStore, Path, str]) -> None:
    _, _, page = built
    assert "cdn" not in page.lower()
    assert "https://" not in page and "http://" not in page
    assert re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", page) == ["plotly.min.js"]
    assert len(re.findall(r"<script\b", page)) == 2


def test_header_states_suite_and_counts(built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = built
    header = page[page.index("<header>"):page.index("</header>")]
    assert SUITE_HASH in header
    assert "smoke &amp; &lt;tiny&gt; suite" in header
    facts = dict(re.findall(r"<dt>([^<]+)</dt><dd>(.*?)</dd>", header))
    assert facts["Benchmarks"] == "2" and facts["Methods"] == "4"
    assert facts["Final runs"] == str(store.final_rows) and facts["Tuning trials"] == str(store.tune_rows)
    assert f">{store.failed_rows}</span>" in facts["Failed runs"]
    assert "UTC" in facts["Generated"]


# ---------------------------------------------------------------- tables


def test_tables_rank_every_method(built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = built
    tables = leaderboard_tables(page)
    assert sorted(tables) == sorted(store.methods)
    expected = leaderboard(read_results(store.run_dir), primary="test/accuracy")
    for benchmark, rows in tables.items():
        methods = [cell(r, "method").removesuffix("incomplete").strip() for r in rows]
        assert methods == store.expected_order[benchmark]
        assert methods == list(expected.loc[expected["benchmark"] == benchmark, "method"])
        assert [cell(r, "rank") for r in rows] == [str(i) for i in range(1, len(rows) + 1)]


def test_failed_runs_mark_the_method_incomplete(built: tuple[FixtureStore, Path, str]) -> None:
    _, _, page = built
    rows = {cell(r, "method").removesuffix("incomplete").strip(): r for r in leaderboard_tables(page)["fashion_mnist_mlp"]}
    mixup = rows["mixup"]
    assert "incomplete" in mixup["classes"] and cell(mixup, "method").endswith("incomplete")
    assert cell(mixup, "n") == "2 +1 failed"
    assert all("incomplete" not in rows[m]["classes"] for m in (BASELINE, "label_smoothing"))
    assert cell(rows[BASELINE], "n") == "3"


def test_cells_show_mean_std_and_ci(built: tuple[FixtureStore, Path, str]) -> None:
    _, _, page = built
    first = leaderboard_tables(page)["cifar10_resnet8"][0]
    accuracy = first["cells"][3][1]
    assert re.fullmatch(r"0\.8\d+ ± 0\.00\d+ ?\[0\.8\d+, 0\.8\d+\]", accuracy), accuracy
    assert 'title="test/accuracy: mean 0.8' in page and "95% CI [" in page
    main = page.split("<main>")[1].split("</main>")[0]
    assert "cost/" not in main, "cost bookkeeping is not a table column"
    assert "threads" not in main and "batch_size" not in main, "measurement settings are not table columns"


@pytest.mark.parametrize(
    ("mean", "std", "text"),
    [
        (0.86681, 0.00306, "0.8668 ± 0.0031"),
        (0.5158, 0.01039, "0.516 ± 0.010"),
        (12_418_048.0, 0.0, "12.4M ± 0"),
        (1.8923, math.nan, "1.892 ± —"),
        (math.nan, math.nan, "— ± —"),
    ],
)
def test_numbers_show_the_std_to_two_significant_digits(mean: float, std: float, text: str) -> None:
    places = shared_decimals(std)
    assert f"{format_number(mean, places)} ± {format_number(std, places)}" == text


def test_every_store_string_is_escaped(built: tuple[FixtureStore, Path, str]) -> None:
    _, _, page = built
    assert "<img" not in page.lower()
    assert "<script>alert" not in page and "<tiny>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "RuntimeError: &lt;script&gt;alert(2)&lt;/script&gt; &amp; out of memory" in page
    figures = embedded_figures(page)
    names = {trace.get("name") for figure in figures.values() for trace in figure["data"]}
    assert "&lt;img src=x onerror=alert(1)&gt;" in names  # plotly shows it as literal text
    assert HOSTILE_METHOD not in names and HOSTILE_ERROR not in page


def test_embedded_json_cannot_close_the_script() -> None:
    value = {"name": "</script><script>alert(1)</script>", "amp": "a & b", "line": "x\u2028y"}
    text = embed_json(value)
    assert not set("<>&\u2028") & set(text)
    assert json.loads(text) == value


# ---------------------------------------------------------------- figures


def test_figures_per_benchmark(built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = built
    figures = embedded_figures(page)
    assert len(figures) == store.expected_figures == 12
    for div_id in figures:
        assert f'<div id="{div_id}" class="plot"></div>' in page
    flops = figures["bench-0-flops"]
    front = next(t for t in flops["data"] if t["name"] == "Pareto front")
    assert front["line"]["shape"] == "hv"
    assert front["x"] == sorted(front["x"]) and len(front["x"]) == 2  # the half-size method and the best one
    assert all("error_y" in t for t in flops["data"] if t["name"] != "Pareto front")
    robust_front = next(t for t in figures["bench-0-robustness"]["data"] if t["name"] == "Pareto front")
    assert robust_front["line"]["shape"] == "vh"
    tuning = figures["bench-0-tuning"]["data"]
    assert sum(1 for t in tuning if t["mode"] == "markers") == len(store.methods["cifar10_resnet8"])
    best = [t for t in tuning if t["mode"] == "lines"]
    assert all(t["y"] == sorted(t["y"]) for t in best), "best-so-far never decreases"


def test_missing_columns_skip_their_figure(tmp_path: Path) -> None:
    store = write_fixture_store(tmp_path, drop_metrics=["test/pgd_linf_accuracy"])
    page = build_dashboard(tmp_path).read_text(encoding="utf-8")
    figures = embedded_figures(page)
    assert len(figures) == store.expected_figures == 10
    assert not any(key.endswith("-robustness") for key in figures)
    assert "Not shown: Clean vs PGD robust accuracy" in page


@pytest.mark.parametrize(
    ("points", "maximize", "front"),
    [
        ([(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9), (2, 0.4)], (False, True), [0, 1, 3]),
        ([(0.9, 0.1), (0.8, 0.3), (0.7, 0.2), (0.85, 0.3)], (True, True), [0, 3]),
        ([(1, 1), (1, 1), (2, 0)], (False, False), [0, 1, 2]),
        ([(1, 1), (1, 1), (2, 2)], (False, False), [0, 1]),
        ([(1, 5), (1, 6), (math.nan, 9), (3, math.inf)], (False, True), [1]),
        ([(5, 5)], (False, True), [0]),
        ([], (False, True), []),
    ],
)
def test_pareto_front(points: list[tuple[float, float]], maximize: tuple[bool, bool], front: list[int]) -> None:
    assert pareto_front(points, maximize) == front


def test_pareto_front_default_is_cost_vs_quality() -> None:
    assert pareto_front([(10, 0.9), (5, 0.8), (20, 0.85)]) == [0, 1]
    with pytest.raises(ValueError, match="one direction per axis"):
        pareto_front([(1, 1)], (True,))  # type: ignore[arg-type]


# ---------------------------------------------------------------- partial and odd stores


def test_method_with_only_failed_runs_is_unranked(tmp_path: Path) -> None:
    write_fixture_store(tmp_path, tune=False)
    for seed in (0, 1):
        ResultStore(tmp_path).write({
            "row_id": f"final/cifar10_resnet8/broken/seed{seed}", "phase": "final", "benchmark": "cifar10_resnet8",
            "method": "broken", "seed": seed, "status": "failed", "error": "ValueError: bad config",
        })
    page = build_dashboard(tmp_path).read_text(encoding="utf-8")
    rows = leaderboard_tables(page)["cifar10_resnet8"]
    last = rows[-1]
    assert cell(last, "method") == "broken incomplete" and cell(last, "rank") == "—"
    assert cell(last, "n") == "0 +2 failed" and "incomplete" in last["classes"]
    assert len(embedded_figures(page)) == 6  # no tuning rows, the failed method is simply not plotted


def test_tuning_only_store_still_renders(tmp_path: Path) -> None:
    store = write_fixture_store(tmp_path)
    for path in (tmp_path / "rows").glob("final*.parquet"):
        path.unlink()
    page = build_dashboard(tmp_path).read_text(encoding="utf-8")
    assert page.count("No final runs yet.") == len(store.methods)
    assert sorted(embedded_figures(page)) == [
        f"bench-{i}-{key}" for i in (0, 1) for key in ("budget-samples", "sensitivity", "tuning")
    ]


def test_consolidated_store_is_read(tmp_path: Path) -> None:
    write_fixture_store(tmp_path, tune=False)
    ResultStore(tmp_path).consolidate()
    for path in (tmp_path / "rows").glob("*.parquet"):
        path.unlink()
    assert len(leaderboard_tables(build_dashboard(tmp_path).read_text(encoding="utf-8"))) == 2


def test_primary_metric_comes_from_the_rows(tmp_path: Path) -> None:
    write_fixture_store(tmp_path, tune=False)
    rows = read_results(tmp_path)
    rows.loc[rows["benchmark"] == "fashion_mnist_mlp", "primary_metric"] = "test/nll"
    final = rows[rows["phase"] == "final"]
    assert primary_metrics(final) == {"cifar10_resnet8": "test/accuracy", "fashion_mnist_mlp": "test/nll"}
    assert primary_metrics(final.drop(columns="primary_metric"))["cifar10_resnet8"] == "test/accuracy"


def test_empty_run_dir_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NoResultsError, match="no results"):
        build_dashboard(tmp_path)
    assert dashboards_main([str(tmp_path)]) == 2
    assert "no results in" in capsys.readouterr().err
    assert not (tmp_path / "dashboard").exists()


def test_module_cli_rebuilds(built: tuple[FixtureStore, Path, str], tmp_path: Path) -> None:
    store, index, _ = built
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run([sys.executable, "-m", "dashboards", str(store.run_dir)], capture_output=True, text=True,
                        env=env, cwd=tmp_path, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(index)
    empty = subprocess.run([sys.executable, "-m", "dashboards", str(tmp_path)], capture_output=True, text=True,
                           env=env, cwd=tmp_path, check=False)
    assert empty.returncode == 2 and "no results in" in empty.stderr


# ---------------------------------------------------------------- comparisons, stability, tuning cost


def test_table_compares_each_method_with_the_baseline(built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = built
    rows = {method_of(r): r for r in leaderboard_tables(page)["cifar10_resnet8"]}
    assert cell(rows[BASELINE], "diff") == "baseline"
    mixup, hostile = rows["mixup"], rows[HOSTILE_METHOD]
    assert re.fullmatch(r"\+0\.02\d* ?\[\+0\.0[12]\d*, \+0\.0[23]\d*\]", cell(mixup, "diff")), cell(mixup, "diff")
    assert cell(mixup, "pimprove") == "1.00" and cell(hostile, "pimprove") == "0.00"
    assert cell(hostile, "diff").startswith("-0.0")
    expected = leaderboard(read_results(store.run_dir), primary="test/accuracy")
    mixup_diff = expected[(expected["benchmark"] == "cifar10_resnet8") & (expected["method"] == "mixup")]
    assert f"mean {mixup_diff['vs_baseline:diff_mean'].iloc[0]:.6g}" in page  # the cell's hover is exact
    assert re.search(r'<td class="diff num better"[^>]*>\+0\.02', page), "a CI above 0 is marked better"
    assert re.search(r'<td class="diff num worse"[^>]*>-0\.0', page), "a CI below 0 is marked worse"
    assert "Δ vs<br>erm" in page and "P(&gt;<br>erm)" in page


def test_table_without_the_baseline_has_no_comparison(tmp_path: Path) -> None:
    write_fixture_store(tmp_path, tune=False)
    page = render_page(read_results(tmp_path), baseline="not_a_method")
    assert 'class="diff' not in page and 'class="pimprove' not in page
    assert 'class="stability' in page  # rank stability needs no baseline


def test_table_shows_rank_stability_and_tuning_cost(built: tuple[FixtureStore, Path, str]) -> None:
    _, _, page = built
    rows = {method_of(r): r for r in leaderboard_tables(page)["cifar10_resnet8"]}
    # method effects are 10x the seed noise: every seed alone gives the overall ranking
    assert {cell(r, "stability") for r in rows.values()} == {f"{rank}.0 ± 0.0100% of seeds agree" for rank in (1, 2, 3, 4)}
    # 6 trials of 40 s and 150k samples each; erm's trial 0004 failed before counting samples
    assert cell(rows[BASELINE], "tuning") == "5 +1 failed240 s · 750k samples"
    assert cell(rows["mixup"], "tuning") == "6240 s · 900k samples"
    assert "validation score over trials: min 0.8" in page  # sensitivity in the hover


def test_budget_curve_figures(built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = built
    figures = embedded_figures(page)
    samples = figures["bench-0-budget-samples"]["data"]
    assert sorted(t["name"] for t in samples) == sorted(
        "&lt;img src=x onerror=alert(1)&gt;" if m == HOSTILE_METHOD else m for m in store.methods["cifar10_resnet8"])
    for trace in samples:
        assert trace["x"] == sorted(trace["x"]) and trace["y"] == sorted(trace["y"]), "budget curves are monotone"
        assert trace["x"][-1] == (750_000 if trace["name"] == BASELINE else 900_000)
    erm_dots = next(t for t in figures["bench-0-tuning"]["data"] if t["name"] == BASELINE and t["mode"] == "markers")
    assert erm_dots["x"] == [1, 2, 3, 4, 6], "the failed 5th trial keeps its place on the trial axis"


def test_sensitivity_figure_shows_every_successful_trial(built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = built
    boxes = embedded_figures(page)["bench-1-sensitivity"]["data"]
    rows = read_results(store.run_dir)
    tune = rows[(rows["phase"] == "tune") & (rows["benchmark"] == "fashion_mnist_mlp") & (rows["status"] == "ok")]
    assert {t["type"] for t in boxes} == {"box"}
    for trace in boxes:
        expected = tune.loc[tune["method"] == trace["name"], "val/accuracy"]
        assert sorted(trace["y"]) == sorted(expected) and len(trace["y"]) == 6


# ---------------------------------------------------------------- protocols


def test_single_protocol_page_has_no_protocol_gap(built: tuple[FixtureStore, Path, str]) -> None:
    _, _, page = built
    assert 'id="protocol-gap"' not in page and "Protocol gap" not in page
    assert '<h3 class="protocol">' not in page
    header = page[page.index("<header>"):page.index("</header>")]
    assert dict(re.findall(r"<dt>([^<]+)</dt><dd>(.*?)</dd>", header))["Protocols"] == "holdout"


@pytest.fixture(scope="module")
def two_protocols(tmp_path_factory: pytest.TempPathFactory) -> tuple[FixtureStore, str]:
    store = write_fixture_store(tmp_path_factory.mktemp("protocols"), protocols=("holdout", "oracle"))
    return store, build_dashboard(store.run_dir).read_text(encoding="utf-8")


def test_each_protocol_gets_its_own_ranked_table(two_protocols: tuple[FixtureStore, str]) -> None:
    store, page = two_protocols
    tables = tables_by_protocol(page)
    assert sorted(tables) == sorted(store.expected_ranking)
    for key, rows in tables.items():
        assert [method_of(r) for r in rows] == store.expected_ranking[key]
    assert store.expected_ranking["fashion_mnist_mlp", "oracle"][:2] == ["label_smoothing", "mixup"]
    figures = embedded_figures(page)
    assert len(figures) == store.expected_figures == 24
    assert "bench-0-p1-flops" in figures and "bench-1-p1-sensitivity" in figures


def test_oracle_results_are_labelled(two_protocols: tuple[FixtureStore, str]) -> None:
    _, page = two_protocols
    main = page.split("<main>")[1].split("</main>")[0]
    assert main.count('<h3 class="protocol">Protocol: <strong class="oracle">oracle (tuned on test)</strong></h3>') == 2
    assert main.count('<h3 class="protocol">Protocol: holdout</h3>') == 2
    assert main.count("chosen on the test split") >= 2
    oracle_tables = re.findall(r'<table class="leaderboard"[^>]*data-protocol="oracle"><caption>([^<]*<strong[^>]*>[^<]*)',
                               page)
    assert len(oracle_tables) == 2 and all("oracle (tuned on test)" in c for c in oracle_tables)


def test_protocol_gap_section(two_protocols: tuple[FixtureStore, str]) -> None:
    store, page = two_protocols
    assert 'id="protocol-gap"' in page and '<a href="#protocol-gap">' in page
    ranks = {t["benchmark"]: t["rows"] for t in parsed_tables(page, "protocol-ranks")}
    agreement = {t["benchmark"]: t["rows"] for t in parsed_tables(page, "protocol-agreement")}
    assert sorted(ranks) == sorted(agreement) == sorted(store.methods)
    fashion = {r["cells"][0][1]: [text for _, text in r["cells"][1:]] for r in ranks["fashion_mnist_mlp"]}
    assert fashion == {"mixup": ["1", "2"], "label_smoothing": ["2", "1"], BASELINE: ["3", "3"]}
    assert "oracle (tuned on test)</th>" in page
    # one swapped pair: of 3 methods tau = (2 - 1) / 3; of 4 methods (5 - 1) / 6
    taus = {b: [text for _, text in rows[0]["cells"]] for b, rows in agreement.items()}
    assert taus["fashion_mnist_mlp"] == ["holdout", "oracle (tuned on test)", "0.33", "3"]
    assert taus["cifar10_resnet8"] == ["holdout", "oracle (tuned on test)", "0.67", "4"]


def test_oracle_only_store_is_still_labelled(tmp_path: Path) -> None:
    write_fixture_store(tmp_path, tune=False, protocols=("oracle",))
    page = build_dashboard(tmp_path).read_text(encoding="utf-8")
    assert "Protocol: <strong class=\"oracle\">oracle (tuned on test)</strong>" in page
    assert 'id="protocol-gap"' not in page  # nothing to compare with


# ---------------------------------------------------------------- the evaluation battery

BATTERY_KEYS = ("adv-fgsm_linf", "adv-pgd_linf", "adv-pgd_l2", "corruption-heatmap", "corruption-severity",
                "risk-coverage", "ood")
ESCAPED_HOSTILE = "&lt;img src=x onerror=alert(1)&gt;"


@pytest.fixture(scope="module")
def battery_built(tmp_path_factory: pytest.TempPathFactory) -> tuple[FixtureStore, Path, str]:
    store = write_fixture_store(tmp_path_factory.mktemp("battery"), battery=BATTERY)
    index = build_dashboard(store.run_dir)
    return store, index, index.read_text(encoding="utf-8")


def shown(method: str) -> str:
    return ESCAPED_HOSTILE if method == HOSTILE_METHOD else method


def battery_keys(figures: dict) -> set[str]:
    return {key for key in figures if key.startswith("bench-") and key.split("-", 2)[2] not in
            ("flops", "latency", "robustness", "tuning", "budget-samples", "sensitivity")}


def test_battery_figures_appear_per_benchmark(battery_built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = battery_built
    figures = embedded_figures(page)
    assert len(figures) == store.expected_figures == 12 + 2 * len(BATTERY_KEYS) + 4 + 3
    for index, benchmark in enumerate(store.methods):
        reliability = {f"bench-{index}-reliability-{j}" for j in range(len(store.methods[benchmark]))}
        assert battery_keys(figures) >= {f"bench-{index}-{key}" for key in BATTERY_KEYS} | reliability
    assert page.count('<h4 class="battery">Evaluation battery</h4>') == 2
    assert HOSTILE_METHOD not in page and "<img" not in page.lower()


def test_robustness_curves_show_each_method_with_its_auac(battery_built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = battery_built
    figures = embedded_figures(page)
    expected = leaderboard(read_results(store.run_dir), baseline=BASELINE)
    cifar = expected[expected["benchmark"] == "cifar10_resnet8"].set_index("method")
    for attack, grid in (("pgd_linf", [0, 0.02, 0.05, 0.1, 0.2]), ("pgd_l2", [0, 0.25, 0.5, 1, 2])):
        traces = figures[f"bench-0-adv-{attack}"]["data"]
        assert len(traces) == len(store.methods["cifar10_resnet8"])
        for trace, method in zip(traces, cifar.index, strict=True):  # in rank order
            auac = cifar.loc[method, f"test/adv_{attack}_auac:mean"]
            assert trace["name"] == f"{shown(method)} (AUAC {auac:.3f})"
            assert trace["x"] == grid
            columns = [f"test/adv_{attack}_e{str(e).replace('.', 'p')}_accuracy" for e in grid]
            assert trace["y"] == pytest.approx([cifar.loc[method, f"{c}:mean"] for c in columns])
            assert trace["error_y"]["array"] == pytest.approx([cifar.loc[method, f"{c}:std"] for c in columns])


def test_corruption_heatmap_and_severity_lines(battery_built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = battery_built
    figures = embedded_figures(page)
    heat = figures["bench-1-corruption-heatmap"]["data"]
    assert [t["type"] for t in heat] == ["heatmap"]
    assert heat[0]["x"] == list(CORRUPTED_FAMILIES)  # the 12 unselected (NaN) families are left out
    assert heat[0]["y"] == store.expected_order["fashion_mnist_mlp"]
    mixup = heat[0]["y"].index("mixup")
    expected = [1 - 0.5 * (0.15 + step * 3) for step in CORRUPTED_FAMILIES.values()]  # mean severity is 3
    assert heat[0]["z"][mixup] == pytest.approx(expected)
    lines = {t["name"]: t for t in figures["bench-0-corruption-severity"]["data"]}
    assert set(lines) == {f"{shown(m)} (mCE {CORRUPTION_FACTORS[m]:.3f})" for m in store.methods["cifar10_resnet8"]}
    erm = lines["erm (mCE 1.000)"]
    assert erm["x"] == [0, 1, 2, 3, 4, 5]
    mean_step = sum(CORRUPTED_FAMILIES.values()) / len(CORRUPTED_FAMILIES)
    assert erm["y"] == pytest.approx([0.85] + [1 - (0.15 + mean_step * k) for k in range(1, 6)])


def test_reliability_diagram_per_method(battery_built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = battery_built
    figures = embedded_figures(page)
    methods = store.expected_order["cifar10_resnet8"]
    for j, method in enumerate(methods):
        figure = figures[f"bench-0-reliability-{j}"]
        title = figure["layout"]["title"]["text"]
        assert title.startswith(f"Reliability: {shown(method)}<br>") and f"T = {TEMPERATURES[method]:.2f}" in title
        assert re.search(r"ECE 0\.0\d\d → 0\.0\d\d after TS", title), title
        bars, diagonal = figure["data"]
        assert bars["type"] == "bar" and len(bars["x"]) == 15 - len(EMPTY_BINS)
        assert bars["x"][0] == pytest.approx((EMPTY_BINS[-1] + 1.5) / 15) and bars["width"] == pytest.approx(1 / 15)
        assert all(0 < y < 1 for y in bars["y"])
        assert (diagonal["x"], diagonal["y"]) == ([0, 1], [0, 1])


def test_risk_coverage_and_ood_figures(battery_built: tuple[FixtureStore, Path, str]) -> None:
    store, _, page = battery_built
    figures = embedded_figures(page)
    curves = figures["bench-1-risk-coverage"]["data"]
    assert len(curves) == len(store.methods["fashion_mnist_mlp"])
    for trace in curves:
        assert trace["x"] == pytest.approx([(i + 1) / 20 for i in range(20)])
        assert trace["y"] == sorted(trace["y"]) and re.fullmatch(r"\S+ \(AURC 0\.\d{4}\)", trace["name"])
    bars = figures["bench-0-ood"]["data"]
    assert {t["type"] for t in bars} == {"bar"} and len(bars) == len(store.methods["cifar10_resnet8"])
    assert all(t["x"] == list(OOD_SETS) and "mean AUROC" in t["name"] for t in bars)


def test_table_shows_battery_summaries_not_curves(battery_built: tuple[FixtureStore, Path, str]) -> None:
    _, _, page = battery_built
    table = page[page.index('<table class="leaderboard"'):page.index("</table>")]
    heads = re.findall(r'<th class="num[^"]*" scope="col" title="([^:"]+):', table)
    for metric in ("test/adv_fgsm_linf_auac", "test/adv_pgd_linf_auac", "test/adv_pgd_l2_auac",
                   "test/corruption_accuracy", "test/mce", "test/relative_mce", "test/ece_ts", "test/aurc",
                   "test/ood_auroc_mean", "memory/peak_bytes"):
        assert metric in heads
    assert heads.index("test/mce") == heads.index("test/corruption_accuracy") + 1
    for detail in ("_e0p05_", "c_fog", "rel_b", "rc_0", "risk_at", "_msp_", "temperature", "cpu_bn", "clean_accuracy"):
        assert not any(detail in head for head in heads), detail
    mce = dict(re.findall(r'<th class="method" scope="row">([^<]*).*?title="test/mce: [^"]*">([^<]*)</td>', table))
    assert mce == {"mixup": "0.500", "label_smoothing": "0.800", "erm": "1.000", ESCAPED_HOSTILE: "1.250"}
    assert "mCE: mean corruption error relative to erm" in table


def test_battery_figures_need_their_columns(tmp_path: Path) -> None:
    store = write_fixture_store(tmp_path, tune=False, battery=("selective", "reliability"))
    page = build_dashboard(tmp_path).read_text(encoding="utf-8")
    figures = embedded_figures(page)
    assert len(figures) == store.expected_figures == 2 * (3 + 1) + 4 + 3
    assert {key.split("-", 2)[2] for key in battery_keys(figures)} == {
        "risk-coverage", "reliability-0", "reliability-1", "reliability-2", "reliability-3"}
    assert "T = " not in figures["bench-0-reliability-0"]["layout"]["title"]["text"]  # no temperature scaling
    skipped = " ".join(re.findall(r'<p class="skipped">([^<]*)</p>', page))
    assert "Best so far vs tuning trials" in skipped  # tune=False: the tuning figures are noted as missing
    assert not re.search("perturbation|orruption|OOD|Reliability|Risk", skipped)  # unselected metrics are not
    assert 'title="test/mce' not in page


def test_stores_without_the_battery_have_no_battery_section(built: tuple[FixtureStore, Path, str]) -> None:
    _, _, page = built
    assert not battery_keys(embedded_figures(page))
    assert "Evaluation battery" not in page and "mCE" not in page


# ---------------------------------------------------------------- in a real browser


@pytest.mark.browser
@pytest.mark.parametrize("store_fixture", ["built", "battery_built"])
def test_page_renders_in_chromium(store_fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get install chromium` (the Makefile's setup step does)")
    from playwright.sync_api import sync_playwright

    store, index, _ = request.getfixturevalue(store_fixture)
    errors: list[str] = []
    dialogs: list[str] = []
    network: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: None if r.url.startswith("file:") else network.append(r.url))
            page.goto(index.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length >= {store.expected_figures}", timeout=60_000
            )
            page.wait_for_timeout(500)  # let any deferred handler (onerror, alert) fire
            assert page.locator(".js-plotly-plot").count() == store.expected_figures
            assert page.locator("table.leaderboard").first.is_visible()
            assert page.locator("img").count() == 0
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert dialogs == []
    assert network == []
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
