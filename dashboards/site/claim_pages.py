"""A page per claim: the paper's claim, and for every run that judged it the gates, the verdict and its
reason, the MDE and the n that would resolve it, the budget, n, the interval method and the command that
reproduces the run; a budget curve (the paired difference against the training budget) when the claim
was judged at several budgets."""

from __future__ import annotations

import math

from dashboards.claims import budget_text
from dashboards.site import paths
from dashboards.site.catalogue import Catalogue
from dashboards.site.cells import Cell, SiteTable, interval, link_cell, number, text_cell, verdict_html
from dashboards.site.layout import SiteContext, site_page
from dashboards.site.method_pages import describe_claim
from dashboards.table import esc
from harness.claims import ClaimVerdict, TrainingLength
from harness.verdicts import Gate


def gate_status(gate: Gate) -> str:
    if not gate.passed:
        return "failed"
    return "passed" if gate.checked else "not checked"


def gates_table(verdict: ClaimVerdict, name: str) -> SiteTable:
    return SiteTable(name, "Gates checked before any verdict (a failed one makes the claim 'not tested').",
                     ("gate", "status", "detail"),
                     tuple((text_cell(g.name), Cell(f'<span class="{esc(gate_status(g).replace(" ", "-"))}">'
                                                    f"{esc(gate_status(g))}</span>", gate_status(g)),
                            text_cell(g.detail)) for g in verdict.gates))


def reproduce_command(verdict: ClaimVerdict, context: SiteContext) -> str:
    return f"python -m harness.run suites/{verdict.suite}.yaml --out {context.results_root}"


def evidence_rows(verdict: ClaimVerdict, context: SiteContext) -> list[tuple[str, str]]:
    """(fact, HTML) pairs of one judged claim."""
    metric = verdict.claim.metric
    mde = number(metric, verdict.mde) if math.isfinite(verdict.mde) else "not finite (fewer than 2 pairs)"
    if verdict.verdict != "inconclusive":
        resolve = f"not needed: the verdict is {verdict.verdict}"
    else:
        resolve = str(verdict.n_to_resolve) if verdict.n_to_resolve else "none affordable (beyond 1000 pairs)"
    return [
        ("verdict", f"{verdict_html(verdict.verdict)} {esc(verdict.reason)}"),
        ("method mean [95% CI]", esc(f"{number(metric, verdict.mean)} {interval(metric, *verdict.ci)}")),
        ("baseline mean", esc(f"{number(metric, verdict.baseline_mean)} ({verdict.claim.baseline})")),
        ("paired difference [95% CI]",
         esc(f"{number(metric, verdict.difference, signed=True)} {interval(metric, *verdict.difference_ci, signed=True)}")),
        ("n (seeds x studies)", esc(f"{verdict.seeds} x {verdict.studies}")),
        ("interval", esc(verdict.interval_method)),
        ("minimum detectable effect", esc(mde)),
        ("seed pairs that would resolve it", esc(resolve)),
        ("seeds at chance", esc(f"method {verdict.at_chance}, baseline {verdict.baseline_at_chance}")),
        ("budget", esc(budget_text(verdict.budget) or "not recorded")),
        ("reproduce", f"<code>{esc(reproduce_command(verdict, context))}</code>"),
    ]


def length_key(length: TrainingLength) -> tuple[float, float]:
    return (length.epochs if length.epochs is not None else math.inf,
            float(length.steps) if length.steps is not None else math.inf)


def budget_curve(verdicts: list[ClaimVerdict], method: str) -> SiteTable | None:
    """The paired difference at each budget the claim was judged at, smallest budget first; None with one."""
    budgets = {budget_text(v.budget) for v in verdicts if v.budget}
    if len(budgets) < 2:
        return None
    ordered = sorted((v for v in verdicts if v.budget), key=lambda v: (v.benchmark, length_key(v.budget.final),
                                                                        v.budget.trials, v.budget.seeds))
    return SiteTable(
        f"claim-{paths.slug(method)}-budget-curve",
        "Budget curve: the paired difference against the budget the suite gave (smallest first).",
        ("budget", "suite", "benchmark", "paired difference [95% CI]", "verdict"),
        tuple((text_cell(budget_text(v.budget)), text_cell(v.suite), text_cell(v.benchmark),
               text_cell(f"{number(v.claim.metric, v.difference, signed=True)} "
                         f"{interval(v.claim.metric, *v.difference_ci, signed=True)}"),
               Cell(verdict_html(v.verdict), v.verdict)) for v in ordered))


def claim_page(catalogue: Catalogue, method: str, context: SiteContext) -> tuple[str, list[SiteTable]]:
    """The page of one method's claim and the tables it shows."""
    page = paths.claim_page(method)
    claim = catalogue.claim_of(method)
    verdicts = catalogue.verdicts_of(method)
    tables: list[SiteTable] = []
    sections = []
    runs = {(view.run.suite_name, view.key): view for view in catalogue.runs}
    for index, verdict in enumerate(verdicts):
        view = next((v for (name, _), v in runs.items() if name == verdict.suite
                     and any(own is verdict for own in v.verdicts)), None)
        run_link = (f'<a href="{esc(paths.link(page, view.page))}">run dashboard '
                    f"<code>{esc(view.run.suite_hash)}</code></a>" if view else "")
        facts = "".join(f"<div><dt>{esc(k)}</dt><dd>{v}</dd></div>" for k, v in evidence_rows(verdict, context))
        gates = gates_table(verdict, f"claim-{paths.slug(method)}-{index}-gates")
        tables.append(gates)
        sections.append(f"<section><h2>{esc(verdict.suite)} · {esc(verdict.benchmark)}</h2><p>{run_link}</p>"
                        f'<dl class="facts">{facts}</dl>{gates.html(page)}</section>')
    curve = budget_curve(verdicts, method)
    if curve:
        tables.append(curve)
        sections.append(f'<section><h2 id="budget-curve">Budget curve</h2>{curve.html(page)}</section>')
    method_link = link_cell(method, paths.link(page, paths.method_page(method))).html
    body = (f"<h1>Claim: {esc(method)}</h1>"
            f'<p class="lead">{esc(describe_claim(claim)) if claim else "no claim declared"}. '
            f"Method page: {method_link}.</p>{''.join(sections)}")
    return site_page(page, f"Claim: {method}", body, context), tables
