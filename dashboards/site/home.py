"""The home page: every suite run (benchmarks, protocols, budget, hardware, code version, when) and a
methods x suites matrix of each method's headline effect against its baseline, with its verdict."""

from __future__ import annotations

import json
import math

from dashboards.claims import budget_text
from dashboards.page import protocols_in
from dashboards.site import paths
from dashboards.site.catalogue import Catalogue, RunView
from dashboards.site.cells import Cell, SiteTable, interval, link_cell, number, text_cell, verdict_html
from dashboards.site.layout import SiteContext, site_page
from dashboards.table import esc
from harness.claims import ClaimVerdict, bench_name, suite_budget
from harness.protocols import DEFAULT_PROTOCOL, protocol_label

PAGE = paths.HOME


def when(view: RunView) -> str:
    """The days the run's rows were written (from the rows, never the build's clock)."""
    stamps = sorted(str(v)[:10] for column in ("started_at", "finished_at") if column in view.rows
                    for v in view.rows[column].dropna())
    if not stamps:
        return "not recorded"
    return stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]}"


def benchmarks_text(view: RunView) -> str:
    return "; ".join(f"{bench_name(b)} ({b['dataset']}, {b['model']})" for b in view.run.suite.get("benchmarks", []))


def budgets_text(view: RunView) -> str:
    suite = view.run.suite
    return "; ".join(f"{bench_name(b)}: {budget_text(suite_budget(suite, bench_name(b)))}"
                     for b in suite.get("benchmarks", []))


def hardware_text(record: str) -> str:
    """A hardware record (the rows' JSON) in a few words: machine, processor, CPUs, CUDA device."""
    try:
        info = json.loads(record)
    except ValueError:
        return record
    if not isinstance(info, dict):
        return record
    cuda = info.get("cuda")
    parts = [str(info.get("machine") or ""), str(info.get("processor") or ""),
             f"{info['cpu_count']} CPUs" if info.get("cpu_count") else "", f"CUDA {cuda}" if cuda else "no CUDA"]
    return ", ".join(part for part in parts if part)


def marked_text(view: RunView) -> str:
    """How many rows the loader marked (other code version or hardware than the run's most common, or one of
    several versions of a row id); the tables aggregate every row, marked ones included."""
    rows = view.run.rows
    marks = [column for column in ("provenance_differs", "duplicate_row_id") if column in rows]
    marked = int(rows[marks].any(axis=1).sum()) if marks else 0
    return f"{marked} of {len(rows)}" + (" (counted in the tables)" if marked else "")


def suites_table(catalogue: Catalogue) -> SiteTable:
    rows = []
    for view in catalogue.runs:
        run = view.run
        rows.append((
            link_cell(run.suite_name, paths.link(PAGE, view.page)), text_cell(run.suite_hash),
            text_cell(benchmarks_text(view)),
            text_cell(", ".join(protocol_label(p) for p in protocols_in(view.rows)) or "none ran"),
            text_cell(budgets_text(view)), text_cell("; ".join(dict.fromkeys(map(hardware_text, run.hardware))) or "not recorded"),
            text_cell(", ".join(code[:12] for code in run.code_versions) or "not recorded"), text_cell(when(view)),
            text_cell(marked_text(view)),
        ))
    heads = ("suite", "hash", "benchmarks", "protocols", "budget", "hardware", "code version", "when", "marked rows")
    return SiteTable("suites", "Every suite run the site was built from (one row per run).", heads, tuple(rows))


def verdict_text(verdict: ClaimVerdict, several_benchmarks: bool = True) -> str:
    """The claim's effect in a few words: benchmark (when the run has several), difference, interval,
    baseline and metric."""
    metric = verdict.claim.metric
    where = f"{verdict.benchmark}: " if several_benchmarks else ""
    return (f"{where}{number(metric, verdict.difference, signed=True)} "
            f"{interval(metric, *verdict.difference_ci, signed=True)} vs {verdict.claim.baseline}, {metric}")


def matrix_cell(catalogue: Catalogue, view: RunView, method: str) -> Cell:
    """The method's claims judged in this run (effect, interval, verdict), else its primary-metric
    difference from the leaderboard's baseline, marked as no claim; empty when it did not run."""
    if method not in view.methods():
        return Cell('<span class="provenance" title="not run in this suite">—</span>', "not run")
    verdicts = [v for v in view.verdicts if v.method == method]
    several = len(view.run.suite.get("benchmarks", [])) > 1
    if verdicts:
        claim_href = esc(paths.link(PAGE, paths.claim_page(method)))
        html = "<br>".join(f'<a href="{claim_href}">{verdict_html(v.verdict)}</a> '
                           f'<span class="ci">{esc(verdict_text(v, several))}</span>' for v in verdicts)
        return Cell(html, "; ".join(f"{verdict_text(v)}: {v.verdict}" for v in verdicts))
    if any(v.claim.baseline == method for v in view.verdicts):
        return text_cell("baseline")
    return text_cell(primary_effect(view, method))


def primary_effect(view: RunView, method: str) -> str:
    """The leaderboard's paired difference from its baseline on each benchmark's primary metric."""
    parts = []
    for record in view.board[view.board["method"] == method].to_dict("records"):
        mean = float(record.get("vs_baseline:diff_mean", math.nan))
        if not math.isfinite(mean):
            continue
        metric = str(record["primary_metric"])
        ci = interval(metric, float(record["vs_baseline:diff_ci_low"]), float(record["vs_baseline:diff_ci_high"]),
                      signed=True)
        protocol = "" if record["protocol"] == DEFAULT_PROTOCOL else f" · {protocol_label(record['protocol'])}"
        parts.append(f"{record['benchmark']}{protocol}: {number(metric, mean, signed=True)} {ci} vs erm, {metric}")
    return ("no claim; " + "; ".join(parts)) if parts else "no claim declared"


def run_label(view: RunView, catalogue: Catalogue) -> str:
    """The suite name, with its hash when the site holds several runs of that suite."""
    same = [v for v in catalogue.runs if v.run.suite_name == view.run.suite_name]
    return view.run.suite_name if len(same) == 1 else f"{view.run.suite_name} ({view.run.suite_hash[:8]})"


def matrix_table(catalogue: Catalogue) -> SiteTable:
    heads = ("method", *(run_label(view, catalogue) for view in catalogue.runs))
    rows = tuple(
        (link_cell(method, paths.link(PAGE, paths.method_page(method))),
         *(matrix_cell(catalogue, view, method) for view in catalogue.runs))
        for method in catalogue.methods())
    caption = ("Headline effect of each method: the verdict on its claim, and the claim's metric paired by seed "
               "against the claim's baseline with the 95% Student-t interval (accuracies in %); methods without a "
               "claim show the difference from erm on the primary metric; — not run in that suite.")
    return SiteTable("matrix", caption, heads, rows)


def claims_list(catalogue: Catalogue) -> str:
    items = [f'<li><a href="{esc(paths.link(PAGE, paths.claim_page(method)))}">{esc(method)}</a>: '
             f"{esc(catalogue.claim_of(method).text)}</li>"
             for method in catalogue.methods() if catalogue.verdicts_of(method)]
    return f"<ul>{''.join(items)}</ul>" if items else "<p>No claim was judged in these runs.</p>"


def home_page(catalogue: Catalogue, context: SiteContext) -> tuple[str, list[SiteTable]]:
    """The home page's HTML and the tables it shows."""
    suites, matrix = suites_table(catalogue), matrix_table(catalogue)
    body = (
        "<h1>harness leaderboard</h1>"
        '<p class="lead">Every method is tuned with the same budget as its baseline under the held-out protocol '
        "(test split sealed while tuning), then retrained over several seeds; differences are paired by seed. "
        f"Built from {len(catalogue.runs)} suite run(s) with <code>{esc(context.command)}</code>.</p>"
        f'<section aria-labelledby="suites"><h2 id="suites">Suites</h2>{suites.html(PAGE)}</section>'
        f'<section aria-labelledby="matrix"><h2 id="matrix">Methods x suites</h2>{matrix.html(PAGE)}</section>'
        f'<section aria-labelledby="claims"><h2 id="claims">Claims</h2>{claims_list(catalogue)}</section>'
        f'<p><a href="{esc(paths.link(PAGE, paths.COMPARE))}">Compare methods</a> · '
        f'<a href="{esc(paths.link(PAGE, paths.DOWNLOADS))}">Downloads</a></p>'
    )
    return site_page(PAGE, "Home", body, context), [suites, matrix]
