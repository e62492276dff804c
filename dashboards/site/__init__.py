"""The static leaderboard site: home, a page per method, claim and run, a compare view and downloads, built
from result stores by `python -m dashboards site STORE... -o DIR` (works offline from file://)."""

from dashboards.site.build import build_site, site_files
from dashboards.site.layout import SiteContext

__all__ = ["SiteContext", "build_site", "site_files"]
