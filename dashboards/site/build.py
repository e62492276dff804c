"""Build the site: every page, table and download from the runs, written deterministically.

Nothing here reads a clock: a rebuild from the same runs writes the same bytes (a test rebuilds
docs/leaderboard and fails when it is stale). The build never writes over a run's store (its `suite.yaml`,
`results.parquet`, `studies.journal` or `rows/`), even when the site is written into the folder of runs,
and removes files only inside the folders it alone writes (`methods/`, `claims/`, `downloads/`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import plotly.offline

from dashboards.page import write_atomic
from dashboards.site import paths
from dashboards.site.catalogue import Catalogue, catalogue
from dashboards.site.cells import SiteTable
from dashboards.site.claim_pages import claim_page
from dashboards.site.compare import SCRIPT, compare_data, compare_page, compare_script
from dashboards.site.downloads import ROWS, downloads_page, leaderboard_csvs, rows_parquet, site_index
from dashboards.site.home import home_page
from dashboards.site.layout import SiteContext
from dashboards.site.method_pages import method_page
from dashboards.site.run_pages import run_page
from dashboards.sources import RunSource
from harness.store import RESULTS_FILE

STORE_FILES = ("suite.yaml", RESULTS_FILE, "studies.journal", "rows")  # what a run's store is made of


class StoreOverwriteError(RuntimeError):
    """The build tried to write a file of a run's store (a bug: pages never share a store's names)."""


def pages_of(cat: Catalogue, context: SiteContext) -> tuple[dict[str, str], list[SiteTable], dict[str, str]]:
    """path -> HTML of every page, every table shown, and path -> kind for the site index."""
    pages, tables, kinds = {}, [], {}

    def add(path: str, kind: str, page: tuple[str, list[SiteTable]] | str) -> None:
        html, shown = page if isinstance(page, tuple) else (page, [])
        pages[path], kinds[path] = html, kind
        tables.extend(shown)

    add(paths.HOME, "home", home_page(cat, context))
    for method in cat.methods():
        add(paths.method_page(method), "method", method_page(cat, method, context))
        if cat.verdicts_of(method):
            add(paths.claim_page(method), "claim", claim_page(cat, method, context))
    for view in cat.runs:
        add(view.page, "run", run_page(view))
    add(paths.COMPARE, "compare", compare_page(context))
    add(paths.DOWNLOADS, "downloads", downloads_page(cat, tables, context))
    return pages, tables, kinds


def readme(cat: Catalogue, context: SiteContext) -> str:
    """A README beside the site for readers browsing the folder (on GitHub, say): open index.html."""
    lines = ["# Leaderboard site", "",
             "Open [`index.html`](index.html): every suite run, a page per method and per claim, each run's "
             "dashboard, a compare view and downloads. It works offline from `file://`.", "",
             f"Built by `{context.command}` from the result stores; rebuild after publishing a run.", "",
             "| suite | run | dashboard | reproduce |", "|---|---|---|---|"]
    lines += [f"| {v.run.suite_name} | `{v.run.suite_hash}` | [dashboard]({v.page}) | "
              f"`python -m harness.run suites/{v.run.suite_name}.yaml --out {context.results_root}` |" for v in cat.runs]
    return "\n".join(lines) + "\n"


def site_files(runs: Sequence[RunSource], context: SiteContext) -> dict[str, bytes]:
    """Every file of the site: path from the site root -> bytes."""
    cat = catalogue(runs)
    pages, tables, kinds = pages_of(cat, context)
    files = {path: html.encode() for path, html in pages.items()}
    names = [t.csv_path for t in tables]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"two tables share a CSV name: {duplicates}"
    files |= {t.csv_path: t.csv().encode() for t in tables}
    files[paths.COMPARE_DATA] = compare_data(cat).encode()
    files[SCRIPT] = compare_script().encode()
    files[ROWS] = rows_parquet(cat)
    files |= leaderboard_csvs(cat)
    files[paths.SITE_INDEX] = site_index(cat, kinds, tables, context).encode()
    files[paths.PLOTLY] = plotly.offline.get_plotlyjs().encode()
    files[paths.README] = readme(cat, context).encode()
    return files


def protected_files(runs: Sequence[RunSource]) -> set[Path]:
    """The store files of every run read from a directory: the build never writes these."""
    protected = set()
    for run in runs:
        if run.run_dir is not None:
            protected |= {(run.run_dir / name).resolve() for name in STORE_FILES}
    return protected


def build_site(runs: Sequence[RunSource], out: Path, context: SiteContext) -> Path:
    """Write the site for `runs` under `out` (files already identical are left alone) and remove the pages
    and downloads of an earlier build it no longer writes; return index.html."""
    protected = protected_files(runs)
    files = site_files(runs, context)
    for path, data in sorted(files.items()):
        target = out / path
        if target.resolve() in protected or any(parent in protected for parent in target.resolve().parents):
            raise StoreOverwriteError(f"refusing to write {target}: it belongs to a run's store")
        write_atomic(target, data, only_if_changed=True)
    for orphan in orphaned_files(out, files):
        orphan.unlink()
    return out / paths.HOME


def orphaned_files(out: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Files in the folders only the site writes (`paths.SITE_DIRS`) that this build does not write: a
    renamed method's old page, a table no longer shown. Nothing outside those folders is ever removed."""
    return sorted(path for folder in paths.SITE_DIRS if (out / folder).is_dir()
                  for path in (out / folder).rglob("*")
                  if path.is_file() and path.relative_to(out).as_posix() not in files)
