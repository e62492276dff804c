"""The compare view: pick a suite's benchmark and two or more methods; side by side, paired differences,
Pareto views. The page is static HTML with real form controls; `compare.js` places what this module
computed with the harness (`harness.comparisons`, the leaderboard, `dashboards.figures.pareto_front`) as
`compare-data.js`, and keeps the selection in the URL's hash so a view can be linked and survives reload."""

from __future__ import annotations

import math
from importlib import resources

from dashboards.figures import pareto_front
from dashboards.page import embed_json
from dashboards.site import paths
from dashboards.site.catalogue import Catalogue, RunView
from dashboards.site.cells import interval, number, unit_note
from dashboards.site.layout import SiteContext, site_page
from harness.columns import higher_is_better
from harness.comparisons import pairwise_differences
from harness.protocols import protocol_label

PAGE = paths.COMPARE
SCRIPT = "compare.js"
# Pareto views: key -> (title, x metric, y metric); "<primary>" is the benchmark's primary metric.
PARETO_VIEWS = (
    ("flops", "accuracy vs forward FLOPs", "model/fwd_flops_2xmac_per_image", "<primary>"),
    ("latency", "accuracy vs CPU batch-1 latency", "latency/cpu_b1_median_ms", "<primary>"),
    ("robustness", "clean vs PGD robust accuracy", "test/accuracy", "test/pgd_linf_accuracy"),
    ("tuning", "accuracy vs tuning wall time", "tuning:wall_s", "<primary>"),
)


def mean_of(view: RunView, benchmark: str, protocol: str, method: str, metric: str) -> float:
    board = view.block_board(benchmark, protocol)
    column = metric if metric.startswith("tuning:") else f"{metric}:mean"
    record = board[board["method"] == method]
    if record.empty or column not in record:
        return math.nan
    value = float(record[column].iloc[0])
    return value if math.isfinite(value) else math.nan


def pareto_views(view: RunView, benchmark: str, protocol: str, methods: list[str]) -> dict[str, dict]:
    """Each Pareto view with values on both axes: its points and the methods on the front (of all methods
    of this benchmark and protocol)."""
    primary = view.primaries.get(benchmark, "test/accuracy")
    out = {}
    for key, title, x_metric, y_metric in PARETO_VIEWS:
        y_metric = primary if y_metric == "<primary>" else y_metric
        points = [(mean_of(view, benchmark, protocol, m, x_metric), mean_of(view, benchmark, protocol, m, y_metric))
                  for m in methods]
        if not any(math.isfinite(x) and math.isfinite(y) for x, y in points):
            continue
        up = (higher_is_better(x_metric) if not x_metric.startswith("tuning:") else False, higher_is_better(y_metric))
        front = {methods[i] for i in pareto_front(points, up)}
        out[key] = {"title": title, "x": x_metric, "y": y_metric, "points": {
            m: {"x": x if math.isfinite(x) else None, "y": y if math.isfinite(y) else None,
                "x_text": axis_text(x_metric, x), "y_text": axis_text(y_metric, y), "front": m in front}
            for m, (x, y) in zip(methods, points, strict=True)}}
    return out


def axis_text(metric: str, value: float) -> str:
    return f"{number(metric, value)} s" if metric.startswith("tuning:") else number(metric, value)


def block_data(view: RunView, benchmark: str, protocol: str) -> dict:
    """What the compare view shows for one run's benchmark under one protocol, as display text."""
    board = view.block_board(benchmark, protocol)
    methods = [str(m) for m in board["method"]]
    metrics = view.shown_metrics(benchmark, protocol)
    means = {m: {metric: f"{number(metric, r[f'{metric}:mean'])} {interval(metric, r[f'{metric}:ci_low'], r[f'{metric}:ci_high'])}"
                 for metric in metrics} for m, r in zip(methods, board.to_dict("records"), strict=True)}
    diffs: dict[str, dict] = {}
    for d in pairwise_differences(view.seed_tables(benchmark, protocol), methods):
        text = f"{number(d.metric, d.difference, signed=True)} {interval(d.metric, *d.ci, signed=True)}"
        diffs.setdefault(f"{d.method}\u0000{d.baseline}", {})[d.metric] = [text, d.direction, d.n_pairs]
    bench = next((b for b in view.run.suite.get("benchmarks", []) if (b.get("name") or "") == benchmark), {})
    return {
        "key": f"{view.key}/{benchmark}/{protocol}", "suite": view.run.suite_name, "hash": view.run.suite_hash,
        "family": view.run.suite_name, "dataset": str(bench.get("dataset", benchmark)), "benchmark": benchmark,
        "protocol": protocol, "protocol_label": protocol_label(protocol), "methods": methods,
        "metrics": [{"name": m, "unit": unit_note(m), "better": "higher" if higher_is_better(m) else "lower"}
                    for m in metrics],
        "means": means, "diffs": diffs, "pareto": pareto_views(view, benchmark, protocol, methods),
        "run_page": view.page,
    }


def compare_data(catalogue: Catalogue) -> str:
    """The contents of compare-data.js: every block's data, safe inside a script."""
    blocks = [block_data(view, benchmark, protocol) for view in catalogue.runs for benchmark, protocol in view.blocks()]
    return f"window.HARNESS_COMPARE = {embed_json({'blocks': blocks})};\n"


def compare_script() -> str:
    return resources.files("dashboards.site").joinpath(SCRIPT).read_text()


FORM = """
<h1>Compare methods</h1>
<p class="lead">Pick a suite's benchmark and two or more of its methods. Cells: mean over seeds [95% Student-t
interval]; paired differences are against the reference method, on the seeds both ran. Accuracies in %.
The selection is kept in the address, so the view can be linked.</p>
<form class="compare" id="compare-form" onsubmit="return false">
<fieldset><legend>Filters</legend>
<label for="family">Family (suite)</label><select id="family" name="family"><option value="">all</option></select>
<label for="dataset">Dataset</label><select id="dataset" name="dataset"><option value="">all</option></select>
<label for="protocol">Protocol</label><select id="protocol" name="protocol"><option value="">all</option></select>
</fieldset>
<fieldset><legend>Suite and benchmark</legend>
<label for="block">Suite · benchmark · protocol</label><select id="block" name="block"></select>
</fieldset>
<fieldset id="methods"><legend>Methods</legend></fieldset>
<fieldset><legend>Views</legend>
<label for="reference">Reference for paired differences</label><select id="reference" name="reference"></select>
<label for="pareto">Pareto view</label><select id="pareto" name="pareto"></select>
</fieldset>
</form>
<p id="status" role="status" aria-live="polite"></p>
<section aria-labelledby="side-by-side"><h2 id="side-by-side">Side by side</h2><div id="side-table"></div></section>
<section aria-labelledby="paired"><h2 id="paired">Paired differences</h2><div id="diff-table"></div></section>
<section aria-labelledby="pareto-heading"><h2 id="pareto-heading">Pareto view</h2><div id="pareto-table"></div>
<div id="pareto-plot" class="plot"></div></section>
<noscript><p>The compare view needs JavaScript; every table is also on the method pages and in Downloads.</p></noscript>
"""


def compare_page(context: SiteContext) -> str:
    return site_page(PAGE, "Compare", FORM, context, scripts=(paths.COMPARE_DATA, paths.PLOTLY, SCRIPT))
