"""The leaderboard site in headless Chromium, from file:// and from its server: pages load cleanly,
navigation works, the compare view keeps its selection in the URL and works from the keyboard, store
strings stay text, headings and tables are semantic. One build and one browser for the module."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboards.site import SiteContext, build_site, paths
from dashboards.site.serve import site_server
from dashboards.sources import load_sources
from harness.plugins import discover_methods
from tests.fixtures_results import HOSTILE_METHOD
from tests.site_fixtures import write_fixture_run
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    discover_methods()
    root = tmp_path_factory.mktemp("runs")
    write_fixture_run(root)
    out = tmp_path_factory.mktemp("site")
    build_site(load_sources([root]).runs, out, SiteContext(command="python -m dashboards site runs -o site"))
    return out


@pytest.fixture(scope="module")
def server_url(site: Path) -> Iterator[str]:
    server = site_server(site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `apt-get install chromium` (the Makefile's setup step does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page whose console errors, page errors, dialogs and off-site requests are recorded."""

    def __init__(self, browser: object, allowed_prefix: str) -> None:
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: None if r.url.startswith(allowed_prefix) or r.url.startswith("data:")
                     else self.problems.append(f"request: {r.url}"))


def page_paths(site: Path) -> list[str]:
    return sorted(json.loads((site / paths.SITE_INDEX).read_text())["pages"])


def base_of(where: str, site: Path, server_url: str) -> str:
    return site.as_uri() + "/" if where == "file" else server_url


HEADINGS_AND_TABLES = """() => {
  const problems = [];
  const levels = [...document.querySelectorAll('h1, h2, h3, h4')].map(h => Number(h.tagName[1]));
  if (levels.filter(l => l === 1).length !== 1) problems.push('h1 count ' + levels.filter(l => l === 1).length);
  levels.forEach((l, i) => { if (i && l > levels[i - 1] + 1) problems.push('heading skips to h' + l); });
  document.querySelectorAll('table').forEach((t, i) => {
    if (!t.querySelector('caption')) problems.push('table ' + i + ' has no caption');
    if (!t.querySelector('thead th')) problems.push('table ' + i + ' has no column heads');
    t.querySelectorAll('thead th').forEach(th => { if (th.getAttribute('scope') !== 'col') problems.push('head without scope'); });
    t.querySelectorAll('tbody th').forEach(th => { if (th.getAttribute('scope') !== 'row') problems.push('row head without scope'); });
  });
  if (!document.querySelector('main')) problems.push('no main landmark');
  document.querySelectorAll('input, select').forEach(c => {
    if (!(c.labels && c.labels.length)) problems.push('control without a label: ' + c.id);
  });
  return problems;
}"""


@pytest.mark.parametrize("where", ["file", "server"])
def test_every_page_loads_without_an_error_and_is_semantic(where: str, site: Path, server_url: str, browser: object) -> None:
    """Each page: no console error, off-site request or dialog; the site's navigation; one h1 and no skipped
    heading level; every table with a caption and scoped heads; every form control labelled."""
    base = base_of(where, site, server_url)
    watched = Watched(browser, base)
    structure = {}
    try:
        for path in page_paths(site):
            response = watched.page.goto(base + path)
            assert response is None or response.ok, path
            watched.page.wait_for_load_state("load")
            assert watched.page.locator("header.site nav a").count() == 3, path
            structure[path] = watched.page.evaluate(HEADINGS_AND_TABLES)
    finally:
        watched.page.close()
    assert watched.problems == []
    assert {path: problems for path, problems in structure.items() if problems} == {}


@pytest.mark.parametrize("where", ["file", "server"])
def test_home_to_method_to_claim_to_run(where: str, site: Path, server_url: str, browser: object) -> None:
    base = base_of(where, site, server_url)
    watched = Watched(browser, base)
    page = watched.page
    try:
        page.goto(base + paths.HOME)
        page.get_by_role("link", name="label_smoothing", exact=True).first.click()
        assert page.locator("h1").inner_text() == "label_smoothing"
        page.get_by_role("link", name="Claim page").click()
        assert page.locator("h1").inner_text() == "Claim: label_smoothing"
        page.get_by_role("link", name="run dashboard").first.click()
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0", timeout=30_000)
        assert page.locator("table.leaderboard").count() == 2
        page.get_by_role("link", name="Home").click()
        assert page.url == base + paths.HOME
    finally:
        page.close()
    assert watched.problems == []


def side_heads(page: object) -> list[str]:
    return page.locator("#side-table thead th").all_inner_texts()


@pytest.mark.parametrize("where", ["file", "server"])
def test_compare_selection_changes_the_table_and_survives_reload(
    where: str, site: Path, server_url: str, browser: object
) -> None:
    base = base_of(where, site, server_url)
    watched = Watched(browser, base)
    page = watched.page
    try:
        page.goto(base + paths.COMPARE)
        before = side_heads(page)
        assert len(before) == 3  # metric + the two methods checked by default
        page.get_by_label("erm", exact=True).check()
        after = side_heads(page)
        assert after == [*before, "erm"]
        assert "methods=" in page.url and "erm" in page.url
        assert page.locator("#diff-table thead th").count() == 3  # metric + two methods against the reference
        page.reload()
        assert side_heads(page) == after
        assert page.get_by_label("erm", exact=True).is_checked()
    finally:
        page.close()
    assert watched.problems == []


def test_compare_works_from_the_keyboard(site: Path, browser: object) -> None:
    watched = Watched(browser, site.as_uri())
    page = watched.page
    try:
        page.goto((site / paths.COMPARE).as_uri())
        target = page.get_by_label(HOSTILE_METHOD, exact=True)
        target_id = target.get_attribute("id")
        for _ in range(40):  # Tab through the form's controls to the checkbox, as a keyboard user would
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == target_id:
                break
        assert page.evaluate("document.activeElement.id") == target_id
        page.keyboard.press("Space")
        assert target.is_checked()
        assert side_heads(page)[-1] == HOSTILE_METHOD
        page.focus("#reference")
        page.keyboard.press("ArrowDown")
        assert page.locator("#diff-table thead th").count() >= 2
    finally:
        page.close()
    assert watched.problems == []


def test_html_method_names_are_text(site: Path, browser: object) -> None:
    watched = Watched(browser, site.as_uri())
    page = watched.page
    try:
        for path in (paths.HOME, paths.method_page(HOSTILE_METHOD), paths.COMPARE):
            page.goto((site / path).as_uri())
            assert page.locator("img").count() == 0, path
        page.goto((site / paths.method_page(HOSTILE_METHOD)).as_uri())
        assert page.locator("h1").inner_text() == HOSTILE_METHOD
        page.goto((site / paths.HOME).as_uri())
        assert page.get_by_role("link", name=HOSTILE_METHOD, exact=True).count() == 1
    finally:
        page.close()
    assert watched.problems == []
