"""The site's loader: run directories, folders of runs and bundles in, one merged run per suite hash out.

Uses the published runs of docs/leaderboard (read, never written) and copies of one in tmp_path.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dashboards.sources import ADDED_COLUMNS, SourceError, load_sources, row_digest
from harness.store import RESULTS_FILE, read_results

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "docs" / "leaderboard"
RUN = PUBLISHED / "label_noise" / "d679d91e4b17bd35"


def store_rows(run) -> pd.DataFrame:
    """A merged run's rows without the columns the loader adds."""
    return run.rows.drop(columns=list(ADDED_COLUMNS))


def copy_run(tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name / RUN.parent.name / RUN.name
    shutil.copytree(RUN, target, ignore=shutil.ignore_patterns("dashboard"))
    return target


def rewrite_rows(run_dir: Path, change) -> None:
    rows = read_results(run_dir)
    change(rows)
    rows.to_parquet(run_dir / RESULTS_FILE, index=False)


def test_every_published_run_loads_with_its_rows() -> None:
    data = load_sources([PUBLISHED])
    published = sorted(p.parent for p in PUBLISHED.glob("*/*/suite.yaml"))
    assert [run.suite_hash for run in data.runs] == [p.name for p in sorted(published, key=lambda p: p.parent.name)]
    for run in data.runs:
        assert run.run_dir is not None and run.suite_name == run.suite["name"] == run.run_dir.parent.name
        pd.testing.assert_frame_equal(store_rows(run), read_results(run.run_dir))
        assert not run.rows["provenance_differs"].any() and not run.rows["duplicate_row_id"].any()
        assert len(run.code_versions) == 1  # one run, one code version: a commit (runs before 2026-12-07: unknown)
        assert re.fullmatch(r"unknown|[0-9a-f]{40}(\+dirty)?", run.code_versions[0]), run.code_versions


def test_a_run_given_twice_merges_to_its_rows_once(tmp_path: Path) -> None:
    copy = copy_run(tmp_path)
    run = load_sources([RUN, tmp_path]).run(RUN.name)
    assert len(run.rows) == len(read_results(RUN))
    assert run.origins == (str(RUN), str(copy))
    assert set(run.rows["row_origins"]) == {f"{RUN}; {copy}"}


def test_a_row_made_by_other_code_or_hardware_is_marked(tmp_path: Path) -> None:
    copy = copy_run(tmp_path)

    def alter(rows: pd.DataFrame) -> None:
        rows.loc[0, "git_commit"] = "0123abcd"
        rows.loc[1, "driver_hardware"] = '{"cuda": "NVIDIA H100"}'

    rewrite_rows(copy, alter)
    run = load_sources([RUN, copy]).run(RUN.name)
    assert len(run.rows) == len(read_results(RUN)) + 2  # the altered rows are other content: kept, not mixed in
    marked = run.rows[run.rows["provenance_differs"]]
    assert sorted(marked["provenance_note"].str.split(" ").str[0]) == ["code", "driver"]
    assert "code version 0123abcd (the run's most common: unknown)" in set(marked["provenance_note"])
    assert marked["duplicate_row_id"].all()
    assert run.rows["duplicate_row_id"].sum() == 4 and run.code_versions == ("unknown", "0123abcd")
    assert len(run.consistent_rows) == len(read_results(RUN)) - 2  # both versions of each altered row left out


def test_two_hashes_of_one_suite_stay_two_runs(tmp_path: Path) -> None:
    other = copy_run(tmp_path)
    other = other.rename(other.parent / "feedfacefeedface")
    rewrite_rows(other, lambda rows: rows.__setitem__("suite_hash", "feedfacefeedface"))
    data = load_sources([RUN, other])
    assert [(run.suite_name, run.suite_hash) for run in data.runs] == [
        ("label_noise", RUN.name), ("label_noise", "feedfacefeedface")]


def test_row_digest_ignores_nulls_and_integral_float_dtypes() -> None:
    assert row_digest({"a": 2, "b": None}) == row_digest({"a": 2.0, "c": float("nan"), "d": pd.NA})
    assert row_digest({"a": 2}) != row_digest({"a": 2.5})


@pytest.mark.parametrize("make", ["missing", "empty_folder", "plain_file"])
def test_a_path_that_holds_no_run_is_named(tmp_path: Path, make: str) -> None:
    path = tmp_path / "nothing"
    if make == "empty_folder":
        path.mkdir()
    elif make == "plain_file":
        path.write_text("not a run")
    with pytest.raises(SourceError, match=str(path)):
        load_sources([path])
