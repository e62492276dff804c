"""A page per claim: the paper's claim, and for every run that judged it the gates, the verdict and its
reason, the MDE and the n that would resolve it, the budget, n, the interval method and the command that
reproduces the run; a budget curve (`harness.claims.budget_curves`: verdict and effect against the final
budget, with its trend in words) where a suite judged the claim at several budgets."""

from __future__ import annotations

import math

from dashboards.claims import budget_text
from dashboards.figures import plotly_text
from dashboards.page import embed_json
from dashboards.site import paths
from dashboards.site.catalogue import Catalogue
from dashboards.site.cells import (
    Cell,
    SiteTable,
    in_percent,
    interval,
    link_cell,
    number,
    text_cell,
    unit_note,
    verdict_html,
)
from dashboards.site.layout import SiteContext, site_page
from dashboards.site.method_pages import describe_claim
from dashboards.table import esc
from harness.claims import BudgetCurve, ClaimVerdict, TrainingLength, budget_curves
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
        if verdict.n_to_resolve and verdict.n_to_resolve <= verdict.seeds * verdict.studies:
            resolve = f"{verdict.n_to_resolve}, already reached: more pairs would settle it (see the verdict)"
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


def length_text(length: TrainingLength) -> str:
    return f"{length.epochs:g} epochs" if length.epochs is not None else f"{length.steps} steps"


def curve_table(curve: BudgetCurve, name: str) -> SiteTable:
    """The points of one budget curve (`harness.claims.budget_curves`), smallest budget first."""
    metric = curve.claim.metric
    return SiteTable(
        name, f"{curve.suite} · {curve.benchmark}: the claim at each final budget; effect signed so that up is "
        f"better on {metric} ({curve.trend}).",
        ("final budget", "verdict", "effect [95% CI]", "seed pairs"),
        tuple((text_cell(length_text(p.budget)), Cell(verdict_html(p.verdict), p.verdict),
               text_cell(f"{number(metric, p.effect, signed=True)} {interval(metric, *p.effect_ci, signed=True)}"),
               text_cell(p.seeds)) for p in curve.points))


def curve_figure(curve: BudgetCurve, div_id: str) -> str:
    """A plotly figure of the effect with its interval against the budget, drawn once plotly has loaded."""
    metric, points = curve.claim.metric, curve.points
    scale = 100.0 if in_percent(metric) else 1.0
    figure = {"data": [{
        "type": "scatter", "mode": "lines+markers", "x": [length_text(p.budget) for p in points],
        "y": [p.effect * scale for p in points], "text": [p.verdict for p in points],
        "error_y": {"type": "data", "symmetric": False,
                    "array": [(p.effect_ci[1] - p.effect) * scale for p in points],
                    "arrayminus": [(p.effect - p.effect_ci[0]) * scale for p in points]}}],
        "layout": {"title": {"text": plotly_text(f"{curve.suite} · {curve.benchmark}")}, "height": 360,
                   "xaxis": {"title": {"text": "final budget"}, "type": "category"},
                   "yaxis": {"title": {"text": plotly_text(f"effect on {metric} ({unit_note(metric) or 'value'}), up is better")},
                             "zeroline": True}, "margin": {"l": 64, "r": 16, "t": 40, "b": 48}}}
    return (f'<figure class="card"><div id="{esc(div_id)}" class="plot"></div></figure>'
            f"<script>window.addEventListener('load', function () {{ if (window.Plotly) {{ var f = {embed_json(figure)}; "
            f"Plotly.newPlot('{esc(div_id)}', f.data, f.layout, {{displaylogo: false, responsive: true}}); }} }});</script>")


def curves_section(method: str, verdicts: list[ClaimVerdict], page: str, tables: list[SiteTable]) -> str:
    """A budget curve per suite and benchmark that judged the claim at two or more budgets; "" when none."""
    curves = budget_curves(verdicts)
    parts = []
    for index, curve in enumerate(curves):
        table = curve_table(curve, f"claim-{paths.slug(method)}-budget-curve-{index}")
        tables.append(table)
        parts.append(f"<h3>{esc(curve.suite)} · {esc(curve.benchmark)}</h3><p>{esc(curve.trend)}.</p>"
                     f"{table.html(page)}{curve_figure(curve, f'budget-curve-{index}')}")
    return f'<section><h2 id="budget-curve">Budget curves</h2>{"".join(parts)}</section>' if parts else ""


def claim_page(catalogue: Catalogue, method: str, context: SiteContext) -> tuple[str, list[SiteTable]]:
    """The page of one method's claim and the tables it shows."""
    page = paths.claim_page(method)
    claim = catalogue.claim_of(method)
    verdicts = catalogue.verdicts_of(method)
    tables: list[SiteTable] = []
    sections = []
    for index, verdict in enumerate(verdicts):
        view = catalogue.run_of(verdict)
        run_link = (f'<a href="{esc(paths.link(page, view.page))}">run dashboard '
                    f"<code>{esc(view.run.suite_hash)}</code></a>")
        facts = "".join(f"<div><dt>{esc(k)}</dt><dd>{v}</dd></div>" for k, v in evidence_rows(verdict, context))
        gates = gates_table(verdict, f"claim-{paths.slug(method)}-{index}-gates")
        tables.append(gates)
        sections.append(f"<section><h2>{esc(verdict.suite)} · {esc(verdict.benchmark)}</h2><p>{run_link}</p>"
                        f'<dl class="facts">{facts}</dl>{gates.html(page)}</section>')
    sections.append(curves_section(method, verdicts, page, tables))
    method_link = link_cell(method, paths.link(page, paths.method_page(method))).html
    body = (f"<h1>Claim: {esc(method)}</h1>"
            f'<p class="lead">{esc(describe_claim(claim)) if claim else "no claim declared"}. '
            f"Method page: {method_link}.</p>{''.join(sections)}")
    scripts = (paths.PLOTLY,) if 'id="budget-curve"' in body else ()
    return site_page(page, f"Claim: {method}", body, context, scripts=scripts), tables
