"""`python -m dashboards RUN_DIR [--title T]`: rebuild RUN_DIR/dashboard/index.html from the result store.

`python -m dashboards site STORE... -o DIR [--serve]` builds the leaderboard site instead (`dashboards.site.cli`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboards.page import build_dashboard
from dashboards.site import cli as site_cli
from harness.errors import HarnessInputError
from harness.plugins import discover_methods


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["site"]:
        return site_cli.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a suite run directory (holding rows/ or results.parquet)")
    parser.add_argument("--title", default=None, help="page title (default: from the suite name)")
    parser.add_argument("--baseline", default="erm",
                        help="method every other is compared with, paired by seed (default: erm)")
    args = parser.parse_args(argv)
    discover_methods()  # so a plugin's protocols (and methods) are named as their plugin says
    try:
        index = build_dashboard(args.run_dir, title=args.title, baseline=args.baseline)
    except HarnessInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
