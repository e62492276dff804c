"""`python -m dashboards site STORE_OR_RUNS... -o DIR [--serve]`: build the static leaderboard site.

Each input is a run directory, a folder of runs (such as docs/leaderboard) or a result bundle
(`dashboards.sources.load_sources` reads and merges them). The site is written under
DIR (it may be the folder of runs itself: run stores are never written); `--serve` then serves DIR on
localhost until Ctrl-C.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboards.site.build import build_site
from dashboards.site.layout import SiteContext
from dashboards.site.serve import serve
from dashboards.sources import load_sources
from harness.errors import HarnessInputError
from harness.plugins import discover_methods

PUBLISHED = "docs/leaderboard"
PUBLISH_COMMAND = f"python -m dashboards site {PUBLISHED} -o {PUBLISHED}"


def command_text(inputs: Sequence[str], out: str) -> str:
    """The command as a reader would retype it (the paths as given)."""
    return " ".join(["python -m dashboards site", *map(shlex.quote, inputs), "-o", shlex.quote(out)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards site", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="run directories, folders of runs (e.g. docs/leaderboard) or bundles")
    parser.add_argument("-o", "--out", required=True, help="folder to write the site into")
    parser.add_argument("--serve", action="store_true", help="serve the built site on localhost until Ctrl-C")
    parser.add_argument("--results-root", default=None,
                        help="the --out the reproduce commands name (default: the first input)")
    args = parser.parse_args(argv)
    discover_methods()
    context = SiteContext(command=command_text(args.inputs, args.out),
                          results_root=args.results_root or args.inputs[0].rstrip("/"))
    try:
        runs = load_sources([Path(p) for p in args.inputs]).runs
        index = build_site(runs, Path(args.out), context)
    except HarnessInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(index)
    if args.serve:
        serve(Path(args.out))
    return 0
