"""docs/leaderboard is the published site: rebuilt from its runs by the one command, it must match what is
committed (a stale page fails here: run `python -m dashboards site docs/leaderboard -o docs/leaderboard`)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from dashboards.site import SiteContext, site_files
from dashboards.site.build import orphaned_files
from dashboards.site.cli import PUBLISH_COMMAND, PUBLISHED
from dashboards.sources import load_sources
from harness.plugins import discover_methods

ROOT = Path(__file__).resolve().parent.parent


def test_published_site_is_up_to_date() -> None:
    discover_methods()
    files = site_files(load_sources([ROOT / PUBLISHED]).runs, SiteContext(command=PUBLISH_COMMAND, results_root=PUBLISHED))
    stale, missing = [], []
    for path, data in sorted(files.items()):
        published = ROOT / PUBLISHED / path
        if not published.is_file():
            missing.append(path)
        elif path.endswith(".parquet"):  # compare the rows, not the writer's version stamp
            if not pd.read_parquet(io.BytesIO(data)).equals(pd.read_parquet(published)):
                stale.append(path)
        elif published.read_bytes() != data:
            stale.append(path)
    extra = [path.relative_to(ROOT / PUBLISHED).as_posix() for path in orphaned_files(ROOT / PUBLISHED, files)]
    assert (missing, stale, extra) == ([], [], []), f"docs/leaderboard is stale: rebuild with `{PUBLISH_COMMAND}`"
