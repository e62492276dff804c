"""A page per method: who it is (paper, mechanism from its docstring, config and search space), its claim
and the verdicts across suites and budgets, every metric against its baseline with intervals, tuning cost,
side effects (non-target metrics it moves beyond their intervals), and links to the runs."""

from __future__ import annotations

import inspect
import json
import math

from pydantic import ValidationError

from dashboards.claims import budget_text
from dashboards.site import paths
from dashboards.site.catalogue import Catalogue, RunView
from dashboards.site.cells import (
    DIFFERENCE_HEADS,
    SiteTable,
    difference_cells,
    interval,
    link_cell,
    number,
    text_cell,
)
from dashboards.site.layout import SiteContext, site_page
from dashboards.table import esc, format_number
from harness.claims import ClaimVerdict
from harness.comparisons import side_effects
from harness.method import METHODS, Claim
from harness.protocols import DEFAULT_PROTOCOL, protocol_label


def describe_claim(claim: Claim) -> str:
    kind = ("better than" if claim.kind == "better"
            else f"no worse (by more than {number(claim.metric, claim.margin)}) than")
    return f"{claim.text} — judged as: {kind} {claim.baseline} on {claim.metric}"


def identity_html(catalogue: Catalogue, method: str) -> str:
    """Summary, paper and mechanism of a registered method; a note for one this harness does not know."""
    name = catalogue.registry_name(method)
    if not catalogue.is_registered(method):
        return (f'<p class="lead">{esc(name)} is not registered in this harness (a plugin that was not loaded, '
                "or a method of another version), so its paper and mechanism are unknown here.</p>")
    cls = METHODS.get(name)
    module = inspect.getmodule(cls)
    mechanism = inspect.cleandoc((module.__doc__ if module else None) or cls.__doc__ or "no docstring")
    label = f" (registered as <code>{esc(name)}</code>)" if name != method else ""
    return (f'<p class="lead">{esc(cls.info.summary)}{label}</p>'
            f"<p>Paper: {esc(cls.info.paper or 'not stated')}</p>"
            f'<h2 id="mechanism">Mechanism</h2><div class="mechanism">{esc(mechanism)}</div>')


def config_tables(catalogue: Catalogue, method: str) -> list[SiteTable]:
    """The method's default config and default search space (registered methods only)."""
    if not catalogue.is_registered(method):
        return []
    cls = METHODS.get(catalogue.registry_name(method))
    stem = f"method-{paths.slug(method)}"
    try:
        defaults = cls.Config().model_dump(mode="json")
    except ValidationError:
        defaults = {}
    space = {key: dimension.model_dump(mode="json") for key, dimension in sorted(cls.search_space.items())}
    return [
        SiteTable(f"{stem}-config", "Default config (the method's own hyper-parameters).", ("key", "default"),
                  tuple((text_cell(k), text_cell(json.dumps(v))) for k, v in sorted(defaults.items()))),
        SiteTable(f"{stem}-search-space", "Default search space (a suite may override it).", ("key", "range"),
                  tuple((text_cell(k), text_cell(json.dumps(v, sort_keys=True))) for k, v in space.items())),
    ]


def verdicts_table(catalogue: Catalogue, method: str, page: str) -> SiteTable | None:
    verdicts = catalogue.verdicts_of(method)
    if not verdicts:
        return None
    rows = []
    for verdict in verdicts:
        metric = verdict.claim.metric
        rows.append((
            text_cell(verdict.suite), text_cell(verdict.benchmark),
            text_cell("; ".join(budget_words(verdict))),
            text_cell(f"{number(metric, verdict.difference, signed=True)} "
                      f"[{number(metric, verdict.difference_ci[0], signed=True)}, "
                      f"{number(metric, verdict.difference_ci[1], signed=True)}]"),
            text_cell(f"{verdict.seeds} x {verdict.studies}"),
            link_cell(verdict.verdict, paths.link(page, paths.claim_page(method))),
        ))
    return SiteTable(f"method-{paths.slug(method)}-verdicts",
                     "The claim judged in every suite and budget (paired difference vs the claim's baseline).",
                     ("suite", "benchmark", "budget", "paired difference [95% CI]", "n (seeds x studies)", "verdict"),
                     tuple(rows))


def budget_words(verdict: ClaimVerdict) -> list[str]:
    return [budget_text(verdict.budget)] if verdict.budget else ["not recorded"]


def tuning_text(record: dict) -> str:
    """Trials, failures and what tuning consumed, from the leaderboard's tuning columns."""
    trials, failed = int(record.get("tuning:trials") or 0), int(record.get("tuning:failed") or 0)
    costs = [f"{format_number(float(record[c]), 0)} {unit}" for c, unit in
             (("tuning:wall_s", "s"), ("tuning:samples_seen", "samples"), ("tuning:flops", "FLOPs"))
             if c in record and math.isfinite(float(record[c]))]
    return f"{trials} trials ({failed} failed)" + (f": {', '.join(costs)}" if costs else "")


def means_table(view: RunView, benchmark: str, protocol: str, record: dict, stem: str) -> SiteTable:
    """The method's own mean and 95% interval of every shown metric (from the leaderboard)."""
    rows = tuple((text_cell(m), text_cell(f"{number(m, record[f'{m}:mean'])} "
                                          f"{interval(m, record[f'{m}:ci_low'], record[f'{m}:ci_high'])}"),
                  text_cell(record["n"]))
                 for m in view.shown_metrics(benchmark, protocol) if record and f"{m}:mean" in record)
    return SiteTable(f"{stem}-means", "Mean over seeds [95% Student-t interval] of every metric (accuracies in %).",
                     ("metric", "mean [95% CI]", "n"), rows)


def block_html(view: RunView, benchmark: str, protocol: str, method: str, page: str,
               tables: list[SiteTable]) -> str:
    """One benchmark and protocol of a run: every metric against the baseline, side effects, tuning cost."""
    claim = next((v.claim for v in view.verdicts if v.method == method and v.benchmark == benchmark), None)
    baseline = claim.baseline if claim else "erm"
    heading = f"{benchmark} · {protocol_label(protocol)}"
    board = view.block_board(benchmark, protocol)
    record = next(iter(board[board["method"] == method].to_dict("records")), {})
    tuning = f"<p>Tuning cost: {esc(tuning_text(record))}.</p>" if record else ""
    run = f"{paths.slug(view.run.suite_name)}-{paths.slug(view.run.suite_hash)}"
    stem = f"method-{paths.slug(method)}-{run}-{paths.slug(benchmark)}-{paths.slug(protocol)}"
    if method == baseline or baseline not in set(board["method"]):
        note = "the baseline itself" if method == baseline else f"{baseline} did not run here"
        means = means_table(view, benchmark, protocol, record, stem)
        tables.append(means)
        return f"<h3>{esc(heading)}</h3><p>No comparison: {esc(note)}.</p>{means.html(page)}{tuning}"
    differences = view.differences(benchmark, protocol, method, baseline)
    table = SiteTable(
        stem,
        f"{method} - {baseline} on every metric, paired by seed, 95% Student-t interval (accuracies in %).",
        DIFFERENCE_HEADS, tuple((text_cell(d.metric), *difference_cells(d)) for d in differences))
    tables.append(table)
    target = claim.metric if claim else view.primaries.get(benchmark, "test/accuracy")
    effects = side_effects(differences, target)
    listed = "".join(f"<li>{esc(d.metric)}: <span class=\"{d.direction}\">{esc(d.direction)}</span> "
                     f"({esc(number(d.metric, d.difference, signed=True))})</li>" for d in effects)
    side = (f"<p>Side effects (measured metrics other than {esc(target)} whose interval excludes zero):</p><ul>{listed}</ul>"
            if effects else f"<p>Side effects: no measured metric other than {esc(target)} moves beyond its interval.</p>")
    return f"<h3>{esc(heading)}</h3>{table.html(page)}{side}{tuning}"


def run_section(view: RunView, method: str, page: str, tables: list[SiteTable]) -> str:
    entry = next((m for m in view.run.suite.get("methods", []) if (m.get("label") or m["name"]) == method), {})
    overrides = {key: entry[key] for key in ("config", "search_space") if entry.get(key)}
    tuned = sorted({str(c) for c in view.final[view.final["method"] == method].get("config_json", []) if c})
    blocks = "".join(block_html(view, benchmark, protocol, method, page, tables)
                     for benchmark, protocol in view.blocks()
                     if method in set(view.block_board(benchmark, protocol)["method"]))
    return (f'<section><h2>Suite {esc(view.run.suite_name)} <small><code>{esc(view.run.suite_hash)}</code></small></h2>'
            f'<p><a href="{esc(paths.link(page, view.page))}">Run dashboard</a></p>'
            f"<p>Suite settings for this method: <code>{esc(json.dumps(overrides, sort_keys=True) or '{}')}</code>; "
            f"frozen configs of its final runs: {' '.join(f'<code>{esc(c)}</code>' for c in tuned) or 'none'}</p>"
            f"{blocks}</section>")


def method_page(catalogue: Catalogue, method: str, context: SiteContext) -> tuple[str, list[SiteTable]]:
    """The page of one method (a label as the runs name it) and the tables it shows."""
    page = paths.method_page(method)
    configs = config_tables(catalogue, method)
    tables = list(configs)
    claim = catalogue.claim_of(method)
    verdicts = verdicts_table(catalogue, method, page)
    claim_html = (f'<p>{esc(describe_claim(claim))}. <a href="{esc(paths.link(page, paths.claim_page(method)))}">'
                  "Claim page</a></p>" if claim else "<p>This method declares no claim.</p>")
    if verdicts:
        tables.append(verdicts)
        claim_html += verdicts.html(page)
    sections = [run_section(view, method, page, tables) for view in catalogue.runs_of(method)]
    body = (f"<h1>{esc(method)}</h1>{identity_html(catalogue, method)}"
            f'<h2 id="config">Config and search space</h2>{"".join(t.html(page) for t in configs) or "<p>Not known here.</p>"}'
            f'<h2 id="claim">Claim</h2>{claim_html}'
            f'<p class="provenance">Claims are judged under the {esc(protocol_label(DEFAULT_PROTOCOL))} protocol only.</p>'
            f"{''.join(sections)}")
    return site_page(page, method, body, context), tables
