"""Where each page of the site lives, and the relative links between them (so it works from file://).

One home for the layout: every page path is relative to the site root, written with `/`, and a link
from one page to another is made relative by `link`. Run dashboards keep the published layout
`<suite>/<hash>/dashboard/index.html`, so docs/leaderboard's existing links and stores stay where they are.
"""

from __future__ import annotations

import posixpath
import re
import zlib

HOME = "index.html"
COMPARE = "compare.html"
COMPARE_DATA = "compare-data.js"
DOWNLOADS = "downloads.html"
SITE_INDEX = "site.json"
PLOTLY = "plotly.min.js"
README = "README.md"
DOWNLOADS_DIR = "downloads"
# Folders only the site writes: a rebuild removes the files in them it no longer writes.
SITE_DIRS = ("methods", "claims", DOWNLOADS_DIR)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(name: str) -> str:
    """A file-name-safe form of `name`; names that had to change get a checksum, so two never collide."""
    safe = _UNSAFE.sub("_", name).strip("._") or "_"
    return safe if safe == name else f"{safe}-{zlib.crc32(name.encode()):08x}"


def method_page(method: str) -> str:
    return f"methods/{slug(method)}.html"


def claim_page(method: str) -> str:
    return f"claims/{slug(method)}.html"


def run_page(suite_name: str, suite_hash: str) -> str:
    return f"{slug(suite_name)}/{slug(suite_hash)}/dashboard/index.html"


def download(name: str) -> str:
    return f"{DOWNLOADS_DIR}/{name}"


def leaderboard_csv(suite_name: str, suite_hash: str) -> str:
    """A run's whole leaderboard (every statistic column of `harness.leaderboard.leaderboard`) as CSV."""
    return download(f"leaderboard-{slug(suite_name)}-{slug(suite_hash)}.csv")


def link(from_page: str, to_path: str) -> str:
    """The relative URL of `to_path` from the page at `from_page` (both relative to the site root)."""
    return posixpath.relpath(to_path, posixpath.dirname(from_page) or ".")
