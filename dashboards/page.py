"""The static dashboard page: result store -> leaderboard tables + plotly figures -> one offline HTML file.

The page reads only the result store and renders the output of `harness.leaderboard.leaderboard`
and of `harness.studies` (budget curves, sensitivity, protocol gap); it computes no statistics of
its own. Every string that came from the store is HTML-escaped, and
figure data is embedded as JSON with `<`, `>` and `&` escaped so no value can close the script.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import plotly.offline
from plotly.utils import PlotlyJSONEncoder

from dashboards.battery import battery_figures
from dashboards.figures import (
    PARETO_FIGURES,
    PRIMARY,
    budget_samples_figure,
    method_colours,
    pareto_figure,
    sensitivity_figure,
    tuning_figure,
)
from dashboards.protocols import protocol_class, protocol_gap_section
from dashboards.table import esc, leaderboard_table, table_metrics
from harness.columns import summary_metrics
from harness.errors import HarnessInputError
from harness.leaderboard import (
    CORRUPTION_ERROR_METRICS,
    leaderboard,
    metric_columns,
    with_protocol,
)
from harness.protocols import DEFAULT_PROTOCOL, protocol_caveat, protocol_label, protocol_sort_key
from harness.store import read_results
from harness.studies import budget_curves, sensitivity

DASHBOARD_DIR = "dashboard"
INDEX_FILE = "index.html"
PLOTLY_JS_FILE = "plotly.min.js"
DEFAULT_PRIMARY = "test/accuracy"
DEFAULT_BASELINE = "erm"
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


class NoResultsError(HarnessInputError):
    """The run directory holds no result rows to show."""


# ---------------------------------------------------------------- entry point


def build_dashboard(
    run_dir: str | os.PathLike[str], *, title: str | None = None, baseline: str | None = DEFAULT_BASELINE
) -> Path:
    """Render `run_dir/dashboard/index.html` (+ `plotly.min.js`) from the result store; return the index."""
    run_dir = Path(run_dir)
    rows = read_results(run_dir)
    if rows.empty:
        raise NoResultsError(
            f"no results in {run_dir}: expected {run_dir / 'rows'}/*.parquet or {run_dir / 'results.parquet'}"
        )
    page = render_page(rows, title=title, run_name=run_dir.resolve().name, baseline=baseline)
    out_dir = run_dir / DASHBOARD_DIR
    write_atomic(out_dir / PLOTLY_JS_FILE, plotly.offline.get_plotlyjs().encode("utf-8"), only_if_changed=True)
    index = out_dir / INDEX_FILE
    write_atomic(index, page.encode("utf-8"))
    return index


def write_atomic(path: Path, data: bytes, *, only_if_changed: bool = False) -> None:
    """Write through a temp file in the same directory and `os.replace`, so readers never see half a file."""
    if only_if_changed and path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- data preparation


def with_required_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """The store's core columns, present even when a partial store lacks them (no protocol: held out)."""
    missing = {c: None for c in ("phase", "benchmark", "method", "status", "error") if c not in rows}
    return with_protocol(rows.assign(**missing) if missing else rows)


def plain(value: object) -> str:
    """A store value as text; integral floats (seeds promoted by missing values) without `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def distinct(rows: pd.DataFrame, column: str) -> list[str]:
    """Sorted distinct non-null values of a column as text ([] when the column is absent)."""
    if column not in rows:
        return []
    return sorted({plain(v) for v in rows[column].dropna()})


def primary_metrics(final: pd.DataFrame) -> dict[str, str]:
    """Primary metric per benchmark: the most common `primary_metric` of its final rows, else the default."""
    chosen = {}
    for benchmark, group in final.groupby("benchmark", sort=True):
        values = group["primary_metric"].dropna().astype(str) if "primary_metric" in group else pd.Series([])
        chosen[str(benchmark)] = str(values.mode().iloc[0]) if len(values) else DEFAULT_PRIMARY
    return chosen


# ---------------------------------------------------------------- html pieces


def table_columns(metrics: Sequence[str], board: pd.DataFrame) -> list[str]:
    """The summary metrics of the table, with the leaderboard's mCE columns beside the corruption accuracy."""
    shown = summary_metrics(metrics)
    derived = [c.removesuffix(":mean") for c in board.columns
               if c.endswith(":mean") and c.removesuffix(":mean").rpartition("/")[2] in CORRUPTION_ERROR_METRICS]
    for metric in derived:
        anchor = f"{metric.partition('/')[0]}/corruption_accuracy"
        shown.insert(shown.index(anchor) + 1 + derived.index(metric) if anchor in shown else len(shown), metric)
    return shown


def provenance_line(final: pd.DataFrame, tune: pd.DataFrame) -> str:
    """Runs, seeds and which data splits each phase read: the tuning protocol, stated on the page."""
    parts = []
    if len(final):
        failed = int((final["status"] != "ok").sum())
        seeds = ", ".join(sorted(distinct(final, "seed"), key=lambda s: (len(s), s)))
        splits = "; ".join(distinct(final, "splits_read")) or "not recorded"
        parts.append(f"{len(final)} final runs ({failed} failed), seeds {esc(seeds or '—')}, read {esc(splits)}")
    else:
        parts.append("no final runs yet")
    if len(tune):
        failed = int((tune["status"] != "ok").sum())
        splits = distinct(tune, "splits_read")
        parts.append(f"{len(tune)} tuning trials ({failed} failed), read {esc('; '.join(splits) or 'not recorded')}")
        if any("test" in split.split(",") for split in splits):
            parts.append('<strong class="warn">tuning read the test split</strong>')
    return f'<p class="provenance">{" · ".join(parts)}</p>'


def header_html(rows: pd.DataFrame, title: str, run_name: str, generated_at: datetime,
                time_label: str = "Generated") -> str:
    final = rows[rows["phase"] == "final"]
    failed = rows[rows["status"] != "ok"]
    by_phase = ", ".join(f"{esc(p)} {n}" for p, n in failed["phase"].fillna("?").value_counts().sort_index().items())
    hashes = distinct(rows, "suite_hash")
    facts = [
        ("Suite", esc(", ".join(distinct(rows, "suite_name")) or "—")),
        ("Suite hash", " ".join(f"<code>{esc(h)}</code>" for h in hashes) or "—"),
        ("Benchmarks", str(final["benchmark"].nunique())),
        ("Methods", str(final["method"].nunique())),
        ("Protocols", ", ".join(protocol_html(p) for p in protocols_in(rows)) or "—"),
        ("Final runs", str(len(final))),
        ("Tuning trials", str(int((rows["phase"] == "tune").sum()))),
        ("Failed runs", f'<span class="{"warn" if len(failed) else ""}">{len(failed)}</span>'
         + (f" ({by_phase})" if len(failed) else "")),
        ("Code", " ".join(f"<code>{esc(c[:12])}</code>" for c in distinct(rows, "git_commit")) or "—"),
        ("Run", esc(run_name)),
        (esc(time_label), esc(generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"))),
    ]
    items = "".join(f'<div><dt>{name}</dt><dd>{value}</dd></div>' for name, value in facts)
    return f'<header><h1>{esc(title)}</h1><dl class="facts">{items}</dl></header>'


def failures_html(rows: pd.DataFrame) -> str:
    failed = rows[rows["status"] != "ok"]
    if failed.empty:
        return ""
    columns = ["phase", "benchmark", "method", "seed", "trial", "node_id", "error"]
    head = "".join(f'<th scope="col">{c}</th>' for c in columns)
    body = []
    for record in failed.to_dict("records"):
        cells = []
        for column in columns:
            value = record.get(column)
            text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
            if column == "error" and len(text) > 400:
                text = text[:400] + "…"
            cells.append(f'<td class="{column}">{esc(text)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<section id="failures"><details><summary>{len(failed)} failed run(s)</summary>'
        f'<div class="table-wrap"><table class="failures"><caption>Runs that failed, with their errors.</caption>'
        f'<thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div></details></section>'
    )


def figure_cards(section_id: str, named: Sequence[tuple[str, str, object | None, str]], store: dict) -> str:
    """Divs for the figures that exist (registered in `store` by div id), a note for those skipped."""
    cards, skipped = [], []
    for key, title, figure, reason in named:
        if figure is None:
            skipped.append(f"{esc(title)} ({esc(reason)})")
            continue
        div_id = f"{section_id}-{key}"
        store[div_id] = figure.to_plotly_json()
        cards.append(f'<figure class="card"><div id="{div_id}" class="plot"></div></figure>')
    note = f'<p class="skipped">Not shown: {"; ".join(skipped)}.</p>' if skipped else ""
    return f'<div class="figures">{"".join(cards)}</div>{note}'


@dataclass(frozen=True)
class PageData:
    """Everything the sections render, computed once from the store rows by harness functions."""

    rows: pd.DataFrame
    board: pd.DataFrame
    curves: pd.DataFrame
    spread: pd.DataFrame
    metrics: Sequence[str]
    colours: Mapping[str, str]
    baseline: str | None
    several_protocols: bool


def protocols_in(rows: pd.DataFrame) -> list[str]:
    """Protocols of the final and tuning rows, held out first and oracle last."""
    ran = rows[rows["phase"].isin(["final", "tune"])]
    return sorted({str(p) for p in ran["protocol"].dropna()}, key=protocol_sort_key)


def protocol_html(protocol: str) -> str:
    """A protocol's label; oracle results are flagged wherever they are named."""
    label, flagged = esc(protocol_label(protocol)), protocol_class(protocol)
    return f'<strong class="{flagged}">{label}</strong>' if flagged else label


def protocol_heading(protocol: str, several: bool) -> tuple[str, str]:
    """(heading, table caption note) for one protocol's block: silent only for a lone held-out protocol."""
    if not several and protocol == DEFAULT_PROTOCOL:
        return "", ""
    heading = f'<h3 class="protocol">Protocol: {protocol_html(protocol)}</h3>'
    if protocol_caveat(protocol):
        heading += f'<p class="oracle-note">{esc(protocol_caveat(protocol))}</p>'
    return heading, f"Protocol: {protocol_html(protocol)}."


def protocol_block(
    block_id: str, benchmark: str, protocol: str, primary: str, data: PageData, figures: dict
) -> str:
    """One benchmark under one protocol: provenance, ranked table, trade-off and tuning figures."""
    rows = data.rows[(data.rows["benchmark"] == benchmark) & (data.rows["protocol"] == protocol)]
    final, tune = rows[rows["phase"] == "final"], rows[rows["phase"] == "tune"]

    def mine(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["benchmark"] == benchmark) & (frame["protocol"] == protocol)] if len(frame) else frame

    own, curves, spread = mine(data.board), mine(data.curves), mine(data.spread)
    heading, note = protocol_heading(protocol, data.several_protocols)
    if len(own):
        table = leaderboard_table(
            benchmark, own, table_metrics(own, data.metrics, primary), primary, baseline=data.baseline,
            protocol=protocol, protocol_note=note, spread={str(r["method"]): r for r in spread.to_dict("records")},
        )
    else:
        table = '<p class="empty">No final runs yet.</p>'
    named = []
    for spec in PARETO_FIGURES:
        figure = pareto_figure(own, spec, primary, data.colours) if len(own) else None
        axes = " and ".join(primary if m == PRIMARY else m for m in (spec.x_metric, spec.y_metric))
        named.append((spec.key, spec.title, figure, f"needs {axes} in final rows"))
    no_trials = "no tuning trials with val/accuracy"
    named += [
        ("tuning", "Best so far vs tuning trials", tuning_figure(curves, data.colours), no_trials),
        ("budget-samples", "Best so far vs samples seen", budget_samples_figure(curves, data.colours),
         "no tuning trials with val/accuracy and train/samples_seen"),
        ("sensitivity", "Sensitivity to hyper-parameters", sensitivity_figure(curves, data.colours), no_trials),
    ]
    return (
        f'<div class="protocol-block" data-protocol="{esc(protocol)}">{heading}{provenance_line(final, tune)}'
        f'<div class="table-wrap">{table}</div>{figure_cards(block_id, named, figures)}'
        f"{battery_section(block_id, own, data, figures)}</div>"
    )


def battery_section(block_id: str, own: pd.DataFrame, data: PageData, figures: dict) -> str:
    """Robustness, corruption, calibration, selective and OOD figures; "" when the suite selected none."""
    found = battery_figures(own, data.colours)
    if not found:
        return ""
    cards = figure_cards(block_id, [(key, title, figure, "") for key, title, figure in found], figures)
    return (f'<h4 class="battery">Evaluation battery</h4><p class="provenance">Means over seeds (error bars: std); '
            f"reliability diagrams are before temperature scaling.</p>{cards}")


def benchmark_section(index: int, benchmark: str, primary: str, data: PageData, figures: dict) -> str:
    """A benchmark with one block per protocol; figure ids are `bench-<i>-<key>` for the first protocol."""
    rows = data.rows[data.rows["benchmark"] == benchmark]
    blocks = [
        protocol_block(f"bench-{index}" + (f"-p{j}" if j else ""), benchmark, protocol, primary, data, figures)
        for j, protocol in enumerate(protocols_in(rows))
    ]
    return f'<section class="benchmark" id="bench-{index}"><h2>{esc(benchmark)}</h2>{"".join(blocks)}</section>'


def embed_json(value: object) -> str:
    """JSON that is safe inside a <script> element: no `<`, `>` or `&` survives unescaped."""
    text = json.dumps(value, cls=PlotlyJSONEncoder, separators=(",", ":"))
    for char, escaped in _JSON_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


# ---------------------------------------------------------------- the page


def render_page(
    rows: pd.DataFrame, *, title: str | None = None, run_name: str = "", generated_at: datetime | None = None,
    baseline: str | None = DEFAULT_BASELINE, site_header: str = "", plotly_src: str = PLOTLY_JS_FILE,
    time_label: str = "Generated",
) -> str:
    """The whole HTML document for these store rows; methods are compared with `baseline` when it ran.

    The leaderboard site (`dashboards.site`) passes its navigation as `site_header` and the relative path of
    its one shared `plotly_src`, and the last row's time as `generated_at` under `time_label`, so a rebuild
    from the same rows writes the same bytes."""
    rows = with_required_columns(rows)
    final = rows[rows["phase"] == "final"]
    primaries = primary_metrics(final)
    metrics = [m for m in metric_columns(final) if final[m].notna().any()]
    ran = rows[rows["phase"].isin(["final", "tune"])]
    board = (leaderboard(ran, primary=primaries, metrics=metrics, baseline=baseline) if len(final)
             else pd.DataFrame())
    data = PageData(
        rows=ran, board=board, curves=budget_curves(ran), spread=sensitivity(ran), metrics=table_columns(metrics, board),
        colours=method_colours(distinct(ran, "method")), baseline=baseline,
        several_protocols=len(protocols_in(rows)) > 1,
    )
    suites = distinct(rows, "suite_name")
    title = title or (f"{suites[0]} · harness results" if len(suites) == 1 else "harness results")
    benchmarks = sorted({str(b) for b in ran["benchmark"].dropna()})
    figures: dict[str, object] = {}
    sections = [
        benchmark_section(i, b, primaries.get(b, DEFAULT_PRIMARY), data, figures) for i, b in enumerate(benchmarks)
    ]
    gap = protocol_gap_section(board) if data.several_protocols and len(board) else ""
    nav = "".join(f'<a href="#bench-{i}">{esc(b)}</a>' for i, b in enumerate(benchmarks))
    nav += '<a href="#protocol-gap">Protocol gap</a>' if gap else ""
    generated_at = generated_at or datetime.now(UTC)
    return PAGE_TEMPLATE.format(
        title=esc(title),
        css=CSS,
        site_header=site_header,
        header=header_html(rows, title, run_name, generated_at, time_label),
        nav=f"<nav>{nav}</nav>" if nav else "",
        sections=("".join(sections) or '<p class="empty">No benchmark rows yet.</p>') + gap,
        failures=failures_html(rows),
        plotly_src=esc(plotly_src),
        figures=embed_json(figures),
        count=len(figures),
    )


CSS = """
:root { --fg: #222; --muted: #666; --line: #ddd; --warn: #a15c00; --warn-bg: #fff5e0; --accent: #4e79a7; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1440px; padding: 1rem 1.5rem 3rem; color: var(--fg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
h1 { font-size: 1.5rem; margin: .2rem 0 .6rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .3rem; padding-top: .6rem; border-top: 2px solid var(--line); }
code { font: 12px ui-monospace, monospace; background: #f3f3f3; padding: 0 .25rem; border-radius: 3px; }
.facts { display: flex; flex-wrap: wrap; gap: .4rem 1.6rem; margin: 0; }
.facts dt { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .04em; }
.facts dd { margin: 0; }
nav { margin: 1rem 0 0; display: flex; flex-wrap: wrap; gap: .8rem; }
nav a { color: var(--accent); }
.provenance, .skipped, caption { color: var(--muted); font-size: 12px; }
caption { text-align: left; caption-side: bottom; padding-top: .3rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .55rem; border-bottom: 1px solid var(--line); vertical-align: top; text-align: left; }
thead th { font-size: 12px; font-weight: 600; border-bottom: 2px solid #bbb; white-space: nowrap; }
th.method { font-weight: 600; max-width: 18rem; overflow-wrap: break-word; }
td.num, th.num, td.n { text-align: right; white-space: nowrap; }
th.primary, td.primary { background: #f2f6fb; }
td.best { font-weight: 700; }
.ci { display: block; color: var(--muted); font-size: 11px; font-weight: 400; }
tr.incomplete td, tr.incomplete th { background: var(--warn-bg); }
td.incomplete { font-style: italic; }
.badge { display: inline-block; font-size: 10px; font-weight: 600; color: var(--warn); border: 1px solid var(--warn);
         border-radius: 3px; padding: 0 .3rem; margin-left: .3rem; text-transform: uppercase; white-space: nowrap; }
.failed, .warn { color: var(--warn); }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: .8rem; margin-top: 1rem; }
.card { margin: 0; border: 1px solid var(--line); border-radius: 4px; padding: .3rem; }
.plot { height: 420px; }
table.failures td.error { font: 12px ui-monospace, monospace; white-space: pre-wrap; max-width: 60rem; }
details summary { cursor: pointer; font-weight: 600; margin-top: 2rem; }
footer { margin-top: 2.5rem; color: var(--muted); font-size: 12px; }
.notice { color: var(--warn); }
td.diff.better { color: #2f7d32; font-weight: 600; }
td.diff.worse { color: var(--warn); font-weight: 600; }
td.baseline { color: var(--muted); font-style: italic; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .2rem; }
.oracle { color: #8e1b1b; }
.oracle-note { color: #8e1b1b; background: #fdeeee; border-left: 3px solid #8e1b1b; padding: .3rem .6rem;
               font-size: 12px; margin: .3rem 0; }
td.oracle, th.oracle { background: #fdeeee; }
.gap-tables { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
h4.battery { font-size: .95rem; margin: 1.2rem 0 .1rem; }
"""

PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{site_header}
{header}
{nav}
<main>{sections}</main>
{failures}
<footer>Static page written by <code>dashboards.build_dashboard</code> from the result store only; it works offline
from file://. {count} figures. Rebuild with <code>python -m dashboards RUN_DIR</code>.</footer>
<script src="{plotly_src}"></script>
<script>
"use strict";
(function () {{
  var figures = {figures};
  var ids = Object.keys(figures);
  if (typeof Plotly === "undefined") {{
    ids.forEach(function (id) {{
      var div = document.getElementById(id);
      div.className = "plot notice";
      div.textContent = "Figure unavailable: plotly.min.js was not found next to index.html.";
    }});
    return;
  }}
  ids.forEach(function (id) {{
    Plotly.newPlot(id, figures[id].data, figures[id].layout, {{responsive: true, displaylogo: false}});
  }});
}})();
</script>
</body>
</html>
"""
