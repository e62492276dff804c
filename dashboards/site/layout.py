"""The page shell every site page shares: head, navigation, main landmark and the footer with the command.

Pages pass their body (already escaped HTML) and their own path, so every link and the shared stylesheet
and scripts are relative and the site works from file:// and from any server folder alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashboards.page import CSS as DASHBOARD_CSS
from dashboards.site import paths
from dashboards.table import esc

SITE_CSS = """
header.site { display: flex; flex-wrap: wrap; align-items: baseline; gap: .4rem 1.4rem; padding: .5rem 0;
              border-bottom: 2px solid var(--line); margin-bottom: 1rem; }
header.site .brand { font-weight: 700; color: var(--fg); text-decoration: none; }
header.site nav { margin: 0; }
header.site nav a[aria-current="page"] { font-weight: 700; color: var(--fg); }
.lead { color: var(--muted); max-width: 60rem; }
.mechanism { white-space: pre-wrap; font: 13px/1.5 ui-monospace, monospace; background: #f8f8f8; padding: .6rem;
             border-radius: 4px; max-width: 60rem; }
td.supported, span.supported { color: #2f7d32; font-weight: 600; }
td.not-supported, span.not-supported { color: #8e1b1b; font-weight: 600; }
span.inconclusive, span.not-tested, span.not-measured { color: var(--warn); font-weight: 600; }
.better { color: #2f7d32; font-weight: 600; }
.worse { color: var(--warn); font-weight: 600; }
.downloads a { margin-right: .8rem; }
form.compare { display: flex; flex-wrap: wrap; gap: .8rem 1.6rem; align-items: flex-start; margin: 1rem 0; }
form.compare fieldset { border: 1px solid var(--line); border-radius: 4px; padding: .4rem .8rem; }
form.compare label { display: block; margin: .15rem 0; }
pre.command { background: #f3f3f3; padding: .5rem; border-radius: 4px; white-space: pre-wrap; }
"""

NAV = (("Home", paths.HOME), ("Compare", paths.COMPARE), ("Downloads", paths.DOWNLOADS))


@dataclass(frozen=True)
class SiteContext:
    """What every page states the same way: the command that built the site, and the results root that the
    reproduce commands name."""

    command: str
    results_root: str = "results"


def site_header(page: str) -> str:
    """The site's navigation bar, with the current page marked for assistive technology."""
    current = ' aria-current="page"'
    links = "".join(f'<a href="{esc(paths.link(page, target))}"{current if target == page else ""}>{name}</a>'
                    for name, target in NAV)
    return (f'<header class="site"><a class="brand" href="{esc(paths.link(page, paths.HOME))}">harness leaderboard</a>'
            f'<nav aria-label="Site">{links}</nav></header>')


def site_page(page: str, title: str, body: str, context: SiteContext, *, scripts: tuple[str, ...] = ()) -> str:
    """A whole HTML document for the page at `page` (a path from the site root); `title` is plain text."""
    tags = "".join(f'<script src="{esc(paths.link(page, script))}"></script>' for script in scripts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{esc(title)} · harness leaderboard</title>
<style>{DASHBOARD_CSS}{SITE_CSS}</style>
</head>
<body>
{site_header(page)}
<main>
{body}
</main>
<footer>Static site built from result stores only; it works offline from file://. Rebuild with
<code>{esc(context.command)}</code>.</footer>
{tags}
</body>
</html>
"""
