"""The leaderboard site, without a browser: pages, tables and downloads from a fixture run, escaped,
deterministic, and never written over a run's store."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dashboards.__main__ import main as dashboards_main
from dashboards.site import SiteContext, build_site, paths, site_files
from dashboards.site.build import StoreOverwriteError
from dashboards.sources import RunSource, load_sources
from harness.bundle import write_bundle
from harness.comparisons import differences_from, seed_tables, side_effects
from harness.plugins import discover_methods
from harness.store import read_results
from tests.fixtures_results import HOSTILE_METHOD, SUITE_HASH, write_fixture_store
from tests.site_fixtures import fixture_suite, write_fixture_run

CONTEXT = SiteContext(command="python -m dashboards site runs -o site", results_root="runs")


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> RunSource:
    discover_methods()
    root = tmp_path_factory.mktemp("runs")
    write_fixture_run(root)
    return load_sources([root]).runs[0]


@pytest.fixture(scope="module")
def files(fixture_run: RunSource) -> dict[str, bytes]:
    return site_files([fixture_run], CONTEXT)


def test_every_page_kind_is_written(files: dict[str, bytes]) -> None:
    index = json.loads(files[paths.SITE_INDEX])
    kinds = sorted(set(index["pages"].values()))
    assert kinds == ["claim", "compare", "downloads", "home", "method", "run"]
    assert set(index["pages"]) <= set(files)
    assert paths.method_page(HOSTILE_METHOD) in files and paths.claim_page("label_smoothing") in files
    assert index["runs"][0]["hash"] == SUITE_HASH
    assert files[paths.PLOTLY].startswith(b"/**") and len(files[paths.PLOTLY]) > 1_000_000


def test_method_names_holding_html_are_escaped(files: dict[str, bytes]) -> None:
    pages = {path: data.decode() for path, data in files.items() if path.endswith((".html", ".js", ".json"))}
    for path, text in pages.items():
        assert "<img src=x" not in text, path
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    assert escaped in pages[paths.HOME] and escaped in pages[paths.method_page(HOSTILE_METHOD)]
    assert "\\u003cimg src=x" in pages[paths.COMPARE_DATA]


def test_each_table_is_downloadable_as_csv(files: dict[str, bytes]) -> None:
    index = json.loads(files[paths.SITE_INDEX])
    assert paths.download("suites.csv") in index["downloads"]["tables"]
    for csv_path in index["downloads"]["tables"]:
        assert csv_path in files and files[csv_path].count(b"\n") >= 1, csv_path
    matrix = pd.read_csv(io.BytesIO(files[paths.download("matrix.csv")]))
    assert HOSTILE_METHOD in set(matrix["method"])
    cell = matrix.set_index("method").loc["label_smoothing"].iloc[0]  # one verdict per benchmark, named
    assert "cifar10_resnet8: " in cell and cell.count(": supported") == 1 and ": inconclusive" in cell


def test_each_run_leaderboard_is_downloadable(files: dict[str, bytes], fixture_run: RunSource) -> None:
    index = json.loads(files[paths.SITE_INDEX])
    [board_csv] = index["downloads"]["leaderboards"]
    board = pd.read_csv(io.BytesIO(files[board_csv]))
    assert {"benchmark", "method", "rank", "test/accuracy:mean", "test/accuracy:ci_low"} <= set(board.columns)
    assert HOSTILE_METHOD in set(board["method"])
    run_page = files[paths.run_page(fixture_run.suite_name, fixture_run.suite_hash)].decode()
    assert f'href="../../../{board_csv}"' in run_page


def test_rows_download_holds_every_row(files: dict[str, bytes], fixture_run: RunSource) -> None:
    rows = pd.read_parquet(io.BytesIO(files[paths.download("rows.parquet")]))
    assert len(rows) == len(fixture_run.rows)
    assert set(rows["row_id"]) == set(fixture_run.rows["row_id"])


def test_method_page_states_claim_metrics_and_side_effects(files: dict[str, bytes]) -> None:
    page = files[paths.method_page("label_smoothing")].decode()
    assert "Szegedy" in page and "Mechanism" in page and "smoothing" in page
    assert "label_smoothing - erm on every metric" in page
    assert "Side effects" in page and "Tuning cost: 6 trials" in page
    assert 'href="../smoke_tiny_suite-' in page  # the run dashboard, by a relative link
    baseline = files[paths.method_page("erm")].decode()
    assert "No comparison: the baseline itself" in baseline
    assert "Mean over seeds [95% Student-t interval] of every metric" in baseline and "test/pgd_linf_accuracy" in baseline


def test_claim_page_states_gates_mde_and_reproduce_command(files: dict[str, bytes]) -> None:
    page = files[paths.claim_page("label_smoothing")].decode()
    for fact in ("no seed at chance", "minimum detectable effect", "skew-corrected t (Hall) at 98.7% (n = 3)", "3 x 1",
                 "python -m harness.run suites/smoke &amp; &lt;tiny&gt; suite.yaml --out runs", "supported"):
        assert fact in page, fact


def test_a_rebuild_writes_the_same_bytes(fixture_run: RunSource, files: dict[str, bytes]) -> None:
    again = site_files([fixture_run], CONTEXT)
    assert again.keys() == files.keys()
    changed = [path for path in files if files[path] != again[path] and not path.endswith(".parquet")]
    assert changed == []


def test_building_into_the_runs_folder_leaves_the_stores_alone_and_prunes_only_its_own(tmp_path: Path) -> None:
    discover_methods()
    run_dir = write_fixture_run(tmp_path)
    (run_dir / "results.parquet").write_bytes(b"stand-in")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.rglob("*") if p.is_file()}
    build_site(load_sources([tmp_path]).runs, tmp_path, CONTEXT)
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before}
    assert after == before
    assert (run_dir / "dashboard" / "index.html").is_file() is False  # the site's run page is at the slug path
    assert (tmp_path / paths.HOME).is_file()
    (tmp_path / "methods" / "renamed.html").write_text("an earlier build's page")
    (tmp_path / "notes.md").write_text("not the site's")
    build_site(load_sources([tmp_path]).runs, tmp_path, CONTEXT)
    assert not (tmp_path / "methods" / "renamed.html").exists() and (tmp_path / "notes.md").is_file()
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in before} == before


def test_a_page_path_on_a_store_file_is_refused(
    tmp_path: Path, fixture_run: RunSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a store to hold a file named like a page, the build stops before writing over it."""
    monkeypatch.setattr("dashboards.site.build.STORE_FILES", ("suite.yaml", paths.HOME))
    run = dataclasses.replace(fixture_run, run_dir=tmp_path)
    (tmp_path / paths.HOME).write_text("a store's file")
    with pytest.raises(StoreOverwriteError, match="belongs to a run's store"):
        build_site([run], tmp_path, CONTEXT)
    assert (tmp_path / paths.HOME).read_text() == "a store's file"


def test_cli_builds_and_names_a_path_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_fixture_run(tmp_path / "runs")
    assert dashboards_main(["site", str(tmp_path / "runs"), "-o", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / paths.HOME).is_file()
    assert "python -m dashboards site" in (tmp_path / "site" / paths.HOME).read_text()
    (tmp_path / "empty").mkdir()
    assert dashboards_main(["site", str(tmp_path / "empty"), "-o", str(tmp_path / "site2")]) == 2
    assert "empty: no suite run in this folder" in capsys.readouterr().err


def test_slugs_never_collide_and_stay_safe() -> None:
    names = ["a b", "a_b", "a<b", HOSTILE_METHOD, "erm"]
    slugs = [paths.slug(name) for name in names]
    assert len(set(slugs)) == len(names)
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") for s in slugs)
    assert paths.slug("erm") == "erm"
    assert paths.link("methods/x.html", "index.html") == "../index.html"


def test_differences_read_each_metric_the_right_way_round() -> None:
    final = pd.DataFrame({
        "seed": [0, 1, 2] * 2, "method": ["m"] * 3 + ["b"] * 3,
        "test/accuracy": [0.91, 0.92, 0.93, 0.90, 0.905, 0.91],  # m higher: better
        "test/ece": [0.05, 0.06, 0.07, 0.02, 0.03, 0.04],  # m higher: worse (lower is better)
        "test/nll": [0.5, 0.6, 0.4, 0.55, 0.45, 0.5],  # no clear difference
        "train/wall_s": [30.0, 31.0, 32.0, 10.0, 10.5, 11.0],  # slower, but bookkeeping: no side effect
    })
    metrics = ["test/accuracy", "test/ece", "test/nll", "train/wall_s"]
    found = {d.metric: d for d in differences_from(seed_tables(final, metrics), "m", "b")}
    assert found["train/wall_s"].direction == "worse"
    assert found["test/accuracy"].direction == "better" and found["test/ece"].direction == "worse"
    assert found["test/nll"].direction == ""
    assert np.isclose(found["test/ece"].difference, 0.03) and found["test/ece"].n_pairs == 3
    assert [d.metric for d in side_effects(list(found.values()), "test/accuracy")] == ["test/ece"]


def test_a_bundle_builds_the_same_pages_as_its_store(tmp_path: Path) -> None:
    """The site reads result bundles (`python -m harness.bundle`) as it reads stores (a published run here:
    a bundle holds a valid suite)."""
    discover_methods()
    run_dir = sorted((Path(__file__).resolve().parents[1] / "docs" / "leaderboard" / "abstention").iterdir())[0]
    from_store = site_files(load_sources([run_dir]).runs, CONTEXT)
    from_bundle = site_files(load_sources([write_bundle(run_dir, tmp_path)]).runs, CONTEXT)
    assert from_bundle.keys() == from_store.keys()
    pages = [path for path in from_store if path.endswith(".html")]
    assert len(pages) >= 5
    assert [path for path in pages if from_bundle[path] != from_store[path]] == []


def test_serve_prints_its_address_serves_the_site_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    write_fixture_run(tmp_path / "runs")
    command = [sys.executable, "-m", "dashboards", "site", str(tmp_path / "runs"), "-o", str(tmp_path / "site"),
               "--serve"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert server.stdout.readline().strip().endswith(paths.HOME)
        address = re.search(r"at (http://127\.0\.0\.1:\d+/)", server.stdout.readline())
        assert address, "the server prints its address"
        with urllib.request.urlopen(address[1] + paths.COMPARE, timeout=30) as response:
            assert response.status == 200 and b"Compare methods" in response.read()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_a_claim_judged_at_several_budgets_gets_a_budget_curve(tmp_path: Path) -> None:
    """Two runs of one suite at two final budgets (two hashes): the claim page draws the curve, smallest first."""
    discover_methods()
    first = write_fixture_run(tmp_path)
    second = first.parent / "0123456789abcdef"
    second.mkdir()
    suite = yaml.safe_load((first / "suite.yaml").read_text())
    for bench in suite["benchmarks"]:
        bench["budget"] = {"epochs": 2.0, "steps": None}
    (second / "suite.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    read_results(first).assign(suite_hash=second.name).to_parquet(second / "results.parquet")
    files = site_files(load_sources([tmp_path]).runs, CONTEXT)
    page = files[paths.claim_page("label_smoothing")].decode()
    assert 'id="budget-curve"' in page
    curve = page[page.index('id="budget-curve"'):]
    assert curve.index("2 epochs") < curve.index("10 epochs")
    assert "cifar10_resnet8" in curve and "fashion_mnist_mlp" in curve and "supported at every budget" in curve
    single = site_files(load_sources([first]).runs, CONTEXT)[paths.claim_page("label_smoothing")].decode()
    assert 'id="budget-curve"' not in single


def test_results_of_another_protocol_are_named_with_it(tmp_path: Path) -> None:
    """A run with the oracle protocol too: its numbers never pass for held-out ones."""
    discover_methods()
    run_dir = tmp_path / "smoke" / SUITE_HASH
    write_fixture_store(run_dir, protocols=("holdout", "oracle"))
    suite = {**fixture_suite(), "protocols": ["holdout", "oracle"], "allow_oracle": True}
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(suite))
    files = site_files(load_sources([tmp_path]).runs, CONTEXT)
    matrix = pd.read_csv(io.BytesIO(files[paths.download("matrix.csv")])).set_index("method")
    assert matrix.loc["mixup"].iloc[0].count("oracle (tuned on test)") == 2
    method = files[paths.method_page("mixup")].decode()
    assert "cifar10_resnet8 · oracle (tuned on test)" in method
