"""Downloads: every table of the site as CSV, the rows of every run as one Parquet file, and a JSON index
of the site (its pages, runs, methods, claims and files), so other tools need not scrape the HTML."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import pandas as pd

from dashboards.page import embed_json
from dashboards.site import paths
from dashboards.site.catalogue import Catalogue
from dashboards.site.cells import SiteTable
from dashboards.site.layout import SiteContext, site_page
from dashboards.table import esc

PAGE = paths.DOWNLOADS
ROWS = paths.download("rows.parquet")


def rows_parquet(catalogue: Catalogue) -> bytes:
    """Every run's rows in one table (each row keeps its suite name and hash and the loader's provenance
    marks), sorted by suite and row id; the paths the rows were read from stay out (they name the builder's
    folders, not the results)."""
    frames = [view.run.rows.drop(columns=["row_origins"], errors="ignore")
              .assign(suite_name=view.run.suite_name, suite_hash=view.run.suite_hash) for view in catalogue.runs]
    rows = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
    order = [c for c in ("suite_name", "suite_hash", "row_id") if c in rows]
    rows = rows.sort_values(order, kind="stable").reset_index(drop=True) if order else rows
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    return buffer.getvalue()


def leaderboard_csvs(catalogue: Catalogue) -> dict[str, bytes]:
    """path -> each run's leaderboard as CSV (the frame the run's dashboard renders)."""
    return {view.leaderboard_csv: view.board.to_csv(index=False, lineterminator="\n").encode() for view in catalogue.runs}


def site_index(catalogue: Catalogue, pages: Mapping[str, str], tables: Sequence[SiteTable], context: SiteContext) -> str:
    """The JSON index: every page by kind, every run, method and claim with its page, every download."""
    index = {
        "command": context.command,
        "pages": dict(sorted(pages.items())),
        "runs": [{"suite": v.run.suite_name, "hash": v.run.suite_hash, "page": v.page,
                  "code_versions": list(v.run.code_versions), "hardware": list(v.run.hardware)}
                 for v in catalogue.runs],
        "methods": [{"name": m, "page": paths.method_page(m)} for m in catalogue.methods()],
        "claims": [{"method": m, "page": paths.claim_page(m),
                    "verdicts": [{"suite": v.suite, "benchmark": v.benchmark, "verdict": v.verdict}
                                 for v in catalogue.verdicts_of(m)]}
                   for m in catalogue.methods() if catalogue.verdicts_of(m)],
        "downloads": {"tables": sorted(t.csv_path for t in tables), "rows": ROWS,
                      "leaderboards": [v.leaderboard_csv for v in catalogue.runs]},
    }
    return embed_json(index) + "\n"


def downloads_page(catalogue: Catalogue, tables: Sequence[SiteTable], context: SiteContext) -> str:
    boards = "".join(f'<li><a href="{esc(paths.link(PAGE, v.leaderboard_csv))}">{esc(v.run.suite_name)} '
                     f"{esc(v.run.suite_hash)}</a></li>" for v in catalogue.runs)
    items = "".join(f'<li><a href="{esc(paths.link(PAGE, t.csv_path))}">{esc(t.name)}.csv</a>: {esc(t.caption)}</li>'
                    for t in sorted(tables, key=lambda t: t.name))
    body = ("<h1>Downloads</h1>"
            f'<h2 id="rows">Rows</h2><p><a href="{esc(paths.link(PAGE, ROWS))}">rows.parquet</a>: every row of every '
            "run (tuning trials, teachers, final runs), with its suite name and hash.</p>"
            f'<h2 id="index">Site index</h2><p><a href="{esc(paths.link(PAGE, paths.SITE_INDEX))}">site.json</a>: '
            "every page, run, method, claim and download.</p>"
            '<h2 id="leaderboards">Leaderboards</h2><p>Each run\'s leaderboard with every statistic column (mean, '
            f'std, 95% interval, paired difference, rank stability, tuning cost) as CSV:</p><ul>{boards}</ul>'
            f'<h2 id="tables">Tables</h2><ul class="downloads">{items}</ul>')
    return site_page(PAGE, "Downloads", body, context)
