"""A page per run: the run's dashboard (`dashboards.page.render_page`) inside the site's navigation, at the
published layout `<suite>/<hash>/dashboard/index.html`, with the site's one plotly.min.js."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from dashboards.page import render_page
from dashboards.site import paths
from dashboards.site.catalogue import RunView
from dashboards.site.layout import SITE_CSS, site_header
from dashboards.table import esc

LAST_ROW = "Last row written"
NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def last_row_time(rows: pd.DataFrame) -> datetime:
    """When the run's last row was written (from the rows, so a rebuild writes the same page)."""
    stamps = [pd.Timestamp(v) for column in ("finished_at", "started_at") if column in rows
              for v in rows[column].dropna()]
    if not stamps:
        return NO_TIME
    latest = max(stamp if stamp.tzinfo else stamp.tz_localize(UTC) for stamp in stamps)
    return latest.to_pydatetime().astimezone(UTC)


def run_page(view: RunView) -> str:
    """The dashboard of one run, linked into the site."""
    page = view.page
    csv = esc(paths.link(page, view.leaderboard_csv))
    header = (f"<style>{SITE_CSS}</style>{site_header(page)}"
              f'<p class="provenance">This run\'s leaderboard, every statistic: <a href="{csv}">CSV</a>.</p>')
    return render_page(view.run.rows, title=view.run.suite_name, run_name=view.run.suite_hash,
                       generated_at=last_row_time(view.run.rows), site_header=header,
                       plotly_src=paths.link(page, paths.PLOTLY), time_label=LAST_ROW)
