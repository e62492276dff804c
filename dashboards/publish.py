"""`python -m dashboards.publish RESULTS_ROOT DEST`: copy finished suite runs into a folder fit for a repository.

Each run keeps what a reader needs and nothing Ray can regenerate: `suite.yaml` (the frozen suite),
`results.parquet` (every row), `studies.journal` (the tuning record) and `dashboard/index.html`. The
3.6 MB `plotly.min.js` every dashboard ships is stored once, at `DEST/plotly.min.js`, and each page
points to it by a relative path, so pages still open offline from `file://`. Then the leaderboard site is
rebuilt over DEST (`dashboards.site`: its index.html, method, claim and run pages, and a README.md listing
the runs with their commands). Runs already in DEST are replaced only by a run of the same suite and hash.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboards.claims import run_dirs
from dashboards.page import DASHBOARD_DIR, INDEX_FILE, PLOTLY_JS_FILE
from dashboards.site import SiteContext, build_site
from dashboards.site.cli import PUBLISHED, command_text
from dashboards.sources import load_sources
from harness.store import RESULTS_FILE, ResultStore

KEPT_FILES = ("suite.yaml", RESULTS_FILE, "studies.journal")


def publish_run(run_dir: Path, dest: Path) -> Path:
    """Copy one run to DEST/<suite>/<hash>/ and return that folder."""
    target = dest / run_dir.parent.name / run_dir.name
    target.mkdir(parents=True, exist_ok=True)
    if (run_dir / "rows").is_dir():
        ResultStore(run_dir).consolidate()  # results.parquet holds every row, even if the run was cut short
    for name in KEPT_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)
    page = run_dir / DASHBOARD_DIR / INDEX_FILE
    if page.is_file():
        depth = "../" * 3  # DEST/<suite>/<hash>/dashboard/index.html -> DEST/plotly.min.js
        html = page.read_text().replace(f'src="{PLOTLY_JS_FILE}"', f'src="{depth}{PLOTLY_JS_FILE}"')
        (target / DASHBOARD_DIR).mkdir(exist_ok=True)
        (target / DASHBOARD_DIR / INDEX_FILE).write_text(html)
        shutil.copy2(run_dir / DASHBOARD_DIR / PLOTLY_JS_FILE, dest / PLOTLY_JS_FILE)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.publish", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="where the runs are (the --out of harness.run)")
    parser.add_argument("dest", type=Path, help="the folder to publish into, e.g. docs/leaderboard")
    args = parser.parse_args(argv)
    runs = list(run_dirs(args.root)) if args.root.is_dir() else []
    if not runs:
        print(f"error: no suite run under {args.root} (a run directory holds suite.yaml and rows/)", file=sys.stderr)
        return 2
    args.dest.mkdir(parents=True, exist_ok=True)
    for run in runs:
        print(publish_run(run, args.dest))
    context = SiteContext(command=command_text([str(args.dest)], str(args.dest)), results_root=PUBLISHED)
    print(build_site(load_sources([args.dest]).runs, args.dest, context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
