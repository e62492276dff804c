"""The runs a leaderboard site is built from: `load_sources(paths) -> SiteData`.

The site accepts, in any mix, run directories (a store: `suite.yaml` beside `rows/` or `results.parquet`,
as `docs/leaderboard/<suite>/<hash>/`), folders holding runs anywhere below them, and result bundles
(`python -m harness.bundle RUN_DIR`, `*.harness.tar.gz`). This module is the one place that reads them.

Interface (what the site imports): `load_sources`, `RunSource`, `SiteData`, `SourceError`.
- `SiteData.runs`: one `RunSource` per suite hash, sorted by suite name then hash (`SiteData.run(hash)`
  finds one). Two hashes of one suite name (the suite changed between runs) stay two runs: their results
  are not comparable.
- `RunSource`: `suite_name`, `suite_hash`, `suite_yaml` (the frozen text) and `suite` (it parsed, a plain
  mapping), `rows` (a DataFrame as `harness.store.read_results` gives it, plus the `ADDED_COLUMNS`),
  `origins` (every source merged into it), `code_versions`, `library_versions`, `hardware` (the rows'
  JSON records, driver's and workers' alike; distinct values, most common first, ties by value),
  `run_dir` (the first run directory among the origins, None for a run known only from bundles; its
  `dashboard/` is the run's own page) and `consistent_rows`.

Several sources of one suite hash merge into one run: rows are deduplicated by content (`row_digest`, a
hash of every non-null value, so the same row read from a store and from a bundle counts once). Nothing is
silently mixed: a row whose code version, library versions or hardware differ from the run's most common
value is kept and marked (`provenance_differs`, with `provenance_note` saying what differs), and rows that
share a `row_id` but not their content (a copy taken before a failed trial was rerun, say) are all kept
and marked `duplicate_row_id`. `RunSource.consistent_rows` leaves every marked row out; which rows an
aggregate uses is the caller's choice, and the page should say which.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dashboards.claims import run_dirs
from harness.bundle import SUFFIX as BUNDLE_SUFFIX
from harness.bundle import BundleError, read_bundle
from harness.errors import HarnessInputError
from harness.store import RESULTS_FILE, UnreadableRowError, read_results

ADDED_COLUMNS = ("row_origins", "provenance_differs", "provenance_note", "duplicate_row_id")
# the provenance a row is compared on, with the words a note uses for it
PROVENANCE_COLUMNS = {"git_commit": "code version", "library_versions": "library versions",
                      "driver_hardware": "driver hardware", "hardware": "worker hardware"}


class SourceError(HarnessInputError):
    """A path given to the site that is not a run directory, a folder of runs or a readable bundle."""


@dataclass(frozen=True, eq=False)
class RunSource:
    """One suite run (one suite hash), merged from every source that holds it."""

    suite_name: str
    suite_hash: str
    suite_yaml: str
    suite: Mapping[str, Any]
    rows: pd.DataFrame
    origins: tuple[str, ...]
    code_versions: tuple[str, ...]
    library_versions: tuple[str, ...]
    hardware: tuple[str, ...]
    run_dir: Path | None

    @property
    def consistent_rows(self) -> pd.DataFrame:
        """The rows no mark questions: neither of other provenance nor one of several versions of a row id."""
        return self.rows[~(self.rows["provenance_differs"] | self.rows["duplicate_row_id"])]


@dataclass(frozen=True, eq=False)
class SiteData:
    """Every run the site shows, one per suite hash."""

    runs: tuple[RunSource, ...]

    def run(self, suite_hash: str) -> RunSource:
        """The run of one suite hash (KeyError naming the known hashes when there is none)."""
        for run in self.runs:
            if run.suite_hash == suite_hash:
                return run
        raise KeyError(f"no run of suite hash {suite_hash}; known: {', '.join(r.suite_hash for r in self.runs)}")


@dataclass(frozen=True, eq=False)
class _Loaded:
    """One source read, before merging: which run it holds and its rows."""

    origin: str
    suite_name: str
    suite_hash: str
    suite_yaml: str
    rows: pd.DataFrame
    run_dir: Path | None


def is_run_dir(path: Path) -> bool:
    """A store: the frozen `suite.yaml` beside `rows/` or `results.parquet`."""
    return (path / "suite.yaml").is_file() and ((path / "rows").is_dir() or (path / RESULTS_FILE).is_file())


def run_identity(origin: str, suite_yaml: str, rows: pd.DataFrame, fallback_hash: str) -> tuple[str, str]:
    """(suite name, suite hash) of a run: the name from its frozen suite, the hash its rows carry (the
    directory's name when it has none yet). Rows of several hashes in one store are refused."""
    try:
        suite = yaml.safe_load(suite_yaml)
    except yaml.YAMLError as error:
        raise SourceError(f"{origin}: suite.yaml is not valid YAML ({error})") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("name"), str):
        raise SourceError(f"{origin}: suite.yaml holds no suite (a mapping with a 'name')")
    hashes = sorted({str(h) for h in rows["suite_hash"].dropna()}) if "suite_hash" in rows else []
    if len(hashes) > 1:
        raise SourceError(f"{origin}: rows of several suite hashes ({', '.join(hashes)}); "
                          "`python -m harness.verify` names them")
    return suite["name"], hashes[0] if hashes else fallback_hash


def _load_run_dir(run_dir: Path) -> _Loaded:
    try:
        rows = read_results(run_dir)
    except UnreadableRowError as error:
        raise SourceError(f"{error}; `python -m harness.run --resume` sets it aside") from None
    suite_yaml = (run_dir / "suite.yaml").read_text()
    name, suite_hash = run_identity(str(run_dir), suite_yaml, rows, run_dir.name)
    return _Loaded(str(run_dir), name, suite_hash, suite_yaml, rows, run_dir)


def _load_bundle(path: Path) -> _Loaded:
    try:
        bundle = read_bundle(path)
        rows = bundle.rows()
    except (BundleError, OSError, ValueError) as error:  # pyarrow's errors are OSError / ValueError
        raise SourceError(str(error)) from None
    name, suite_hash = run_identity(str(path), bundle.suite_yaml, rows, bundle.suite_hash)
    return _Loaded(str(path), name, suite_hash, bundle.suite_yaml, rows, None)


def _sources_under(path: Path) -> list[_Loaded]:
    """The runs one path holds: a run directory, a bundle, or every run and bundle found below a folder."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if path.is_file():
        return [_load_bundle(path)]
    if is_run_dir(path):
        return [_load_run_dir(path)]
    found = [_load_run_dir(run_dir) for run_dir in run_dirs(path)]
    found += [_load_bundle(bundle) for bundle in sorted(path.rglob(f"*{BUNDLE_SUFFIX}"))]
    if not found:
        raise SourceError(f"{path}: no suite run in this folder (a run directory holds suite.yaml and rows/ "
                          f"or {RESULTS_FILE}; a bundle is a *{BUNDLE_SUFFIX} file)")
    return found


def is_null(value: Any) -> bool:
    """None, NaN, pd.NA or NaT: a value a row does not have (a column another source added)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def row_digest(row: Mapping[str, Any]) -> str:
    """A stable hash of a row's content: every non-null value, by column name; integral floats count as
    integers, so the same row read through frames of different column dtypes has one digest."""
    items = {}
    for column, value in row.items():
        if column in ADDED_COLUMNS or is_null(value):
            continue
        if hasattr(value, "item"):  # a numpy scalar
            value = value.item()
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        items[str(column)] = value
    blob = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _present_values(rows: pd.DataFrame, column: str) -> list[str]:
    if column not in rows:
        return []
    return [str(value) for value in rows[column] if not is_null(value)]


def most_common_first(values: Iterable[str]) -> tuple[str, ...]:
    """Distinct values, most common first (ties by value, so the order is deterministic)."""
    counts = Counter(values)
    return tuple(sorted(counts, key=lambda value: (-counts[value], value)))


def _mark_provenance(rows: pd.DataFrame) -> pd.DataFrame:
    notes: list[list[str]] = [[] for _ in range(len(rows))]
    for column, words in PROVENANCE_COLUMNS.items():
        ranked = most_common_first(_present_values(rows, column))
        if len(ranked) < 2:
            continue
        for i, value in enumerate(rows[column]):
            if not is_null(value) and str(value) != ranked[0]:
                notes[i].append(f"{words} {value} (the run's most common: {ranked[0]})")
    rows["provenance_differs"] = [bool(note) for note in notes]
    rows["provenance_note"] = ["; ".join(note) for note in notes]
    rows["duplicate_row_id"] = rows["row_id"].duplicated(keep=False) if "row_id" in rows else False
    return rows


def merge_run(parts: Sequence[_Loaded]) -> RunSource:
    """One run from every source of its suite hash: rows deduplicated by content, odd provenance marked."""
    first = parts[0]
    frames = [part.rows.assign(row_origins=part.origin) for part in parts]
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    digests = pd.Series([row_digest(row) for row in rows.to_dict("records")], index=rows.index)
    origins = rows.groupby(digests, sort=False)["row_origins"].agg(lambda held: "; ".join(dict.fromkeys(held)))
    rows = rows.loc[~digests.duplicated()].reset_index(drop=True)
    rows["row_origins"] = origins.loc[digests.drop_duplicates()].to_numpy()
    rows = _mark_provenance(rows)
    return RunSource(
        suite_name=first.suite_name, suite_hash=first.suite_hash, suite_yaml=first.suite_yaml,
        suite=yaml.safe_load(first.suite_yaml), rows=rows,
        origins=tuple(dict.fromkeys(part.origin for part in parts)),
        code_versions=most_common_first(_present_values(rows, "git_commit")),
        library_versions=most_common_first(_present_values(rows, "library_versions")),
        hardware=most_common_first(_present_values(rows, "driver_hardware") + _present_values(rows, "hardware")),
        run_dir=next((part.run_dir for part in parts if part.run_dir is not None), None))


def load_sources(paths: Sequence[Path]) -> SiteData:
    """Every run held by `paths` (run directories, folders of runs, bundles), merged per suite hash.

    Raises `SourceError` naming the path that is none of those, or cannot be read."""
    if not paths:
        raise SourceError("no source given: name run directories, folders holding runs, or bundles")
    by_hash: dict[str, list[_Loaded]] = {}
    for path in paths:
        for loaded in _sources_under(Path(path)):
            by_hash.setdefault(loaded.suite_hash, []).append(loaded)
    runs = [merge_run(parts) for parts in by_hash.values()]
    return SiteData(tuple(sorted(runs, key=lambda run: (run.suite_name, run.suite_hash))))
