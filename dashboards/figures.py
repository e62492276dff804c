"""Plotly figures of the dashboard: trade-off scatters with Pareto fronts, budget curves and sensitivity.

Every function here is pure: it takes leaderboard rows or `harness.studies.budget_curves` rows and
returns a figure (or None when the columns it needs are missing), so the page module only arranges
and serialises them.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from harness.columns import higher_is_better

TUNE_OBJECTIVE = "val/accuracy"
PRIMARY = "<primary>"  # placeholder in a FigureSpec: the benchmark's primary metric

# Tableau 10: readable on white and distinguishable for most colour-vision deficiencies.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)
FRONT_COLOUR = "#444444"

# A small explicit template: plotly.py would otherwise embed its ~10 kB default in every figure.
TEMPLATE: dict = {
    "layout": {
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 12, "color": "#222"},
        "colorway": list(PALETTE),
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "xaxis": {"gridcolor": "#e8e8e8", "zeroline": False, "linecolor": "#999", "ticks": "outside"},
        "yaxis": {"gridcolor": "#e8e8e8", "zeroline": False, "linecolor": "#999", "ticks": "outside"},
        "hoverlabel": {"align": "left"},
    }
}


@dataclass(frozen=True)
class FigureSpec:
    """One trade-off figure: which metric goes on which axis."""

    key: str
    title: str
    x_metric: str
    y_metric: str


PARETO_FIGURES = (
    FigureSpec("flops", "Accuracy vs forward FLOPs", "model/fwd_flops_2xmac_per_image", PRIMARY),
    FigureSpec("latency", "Accuracy vs CPU batch-1 latency", "latency/cpu_b1_median_ms", PRIMARY),
    FigureSpec("robustness", "Clean vs PGD robust accuracy", "test/accuracy", "test/pgd_linf_accuracy"),
)


def pareto_front(
    points: Sequence[tuple[float, float]], maximize: tuple[bool, bool] = (False, True)
) -> list[int]:
    """Indices (ascending) of the points that no other point dominates.

    A point dominates another when it is at least as good on both axes and strictly better on one;
    `maximize` gives the direction per axis. Points with a NaN or infinite coordinate never make the
    front; exact duplicates are both kept.
    """
    if len(maximize) != 2:
        raise ValueError(f"maximize needs one direction per axis, got {maximize!r}")
    signs = [1.0 if up else -1.0 for up in maximize]
    scored = [
        (index, signs[0] * float(x), signs[1] * float(y))
        for index, (x, y) in enumerate(points)
        if math.isfinite(x) and math.isfinite(y)
    ]
    front = []
    for index, a, b in scored:
        dominated = any(c >= a and d >= b and (c > a or d > b) for _, c, d in scored)
        if not dominated:
            front.append(index)
    return front


def plotly_text(value: object) -> str:
    """A store string made safe for plotly labels, which interpret a subset of HTML tags."""
    return html.escape(str(value), quote=False)


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    """One stable colour per method across every figure of the page."""
    return {method: PALETTE[i % len(PALETTE)] for i, method in enumerate(sorted(set(methods)))}


def axis_title(metric: str) -> str:
    """The metric name with its better direction, short enough for a vertical axis."""
    return f"{metric} {'↑' if higher_is_better(metric) else '↓'} better"


def axis(title: str) -> dict:
    """Axis settings; counts (FLOPs, params) get SI ticks such as 12.4M instead of 12400000."""
    settings: dict = {"title": {"text": plotly_text(title)}}
    if title.startswith("model/"):
        settings["tickformat"] = "~s"
    return settings


def base_layout(title: str, x_title: str, y_title: str) -> dict:
    return {
        "template": TEMPLATE,
        "title": {"text": plotly_text(title), "x": 0.01, "font": {"size": 14}},
        "xaxis": axis(x_title),
        "yaxis": axis(y_title),
        "height": 420,
        "margin": {"l": 64, "r": 16, "t": 40, "b": 48},
        "legend": {"orientation": "h", "y": -0.3, "yanchor": "top", "x": 0},
        "hovermode": "closest",
    }


def degenerate_range(values: Sequence[float]) -> list[float] | None:
    """An axis range of +-10% when every value is equal (e.g. all methods share a model's FLOPs)."""
    distinct = {float(v) for v in values}
    if len(distinct) != 1:
        return None
    value = distinct.pop()
    pad = abs(value) * 0.1 or 1.0
    return [value - pad, value + pad]


def finite_or_zero(value: object) -> float:
    number = float(value) if value is not None else float("nan")
    return number if math.isfinite(number) else 0.0


def pareto_figure(
    board: pd.DataFrame, spec: FigureSpec, primary: str, colours: Mapping[str, str]
) -> go.Figure | None:
    """Per-method means with std error bars and the Pareto front as a step line; None if unplottable."""
    x_metric = primary if spec.x_metric == PRIMARY else spec.x_metric
    y_metric = primary if spec.y_metric == PRIMARY else spec.y_metric
    needed = [f"{m}:{s}" for m in (x_metric, y_metric) for s in ("mean", "std")]
    if any(column not in board for column in needed):
        return None
    points = board[["method", "n", *needed]].copy()
    points = points[points[f"{x_metric}:mean"].notna() & points[f"{y_metric}:mean"].notna()]
    if points.empty:
        return None
    title = spec.title if spec.y_metric != PRIMARY or primary == "test/accuracy" else f"{primary} vs {x_metric}"
    figure = go.Figure(layout=base_layout(title, axis_title(x_metric), axis_title(y_metric)))
    for row in points.itertuples(index=False):
        method, n, x, x_std, y, y_std = row
        hover = (
            f"<b>{plotly_text(method)}</b> (n={int(n)})<br>{plotly_text(x_metric)}: {x:.4g} ± {finite_or_zero(x_std):.2g}"
            f"<br>{plotly_text(y_metric)}: {y:.4g} ± {finite_or_zero(y_std):.2g}"
        )
        figure.add_trace(go.Scatter(
            x=[float(x)], y=[float(y)], mode="markers", name=plotly_text(method),
            marker={"size": 10, "color": colours.get(method, FRONT_COLOUR)},
            error_x={"type": "data", "array": [finite_or_zero(x_std)], "thickness": 1.2, "width": 3},
            error_y={"type": "data", "array": [finite_or_zero(y_std)], "thickness": 1.2, "width": 3},
            text=[hover], hovertemplate="%{text}<extra></extra>",
        ))
    for axis_name, metric in (("xaxis", x_metric), ("yaxis", y_metric)):
        fixed = degenerate_range(points[f"{metric}:mean"].astype(float).tolist())
        if fixed is not None:
            figure.layout[axis_name].range = fixed
    maximize = (higher_is_better(x_metric), higher_is_better(y_metric))
    xy = list(zip(points[f"{x_metric}:mean"].astype(float), points[f"{y_metric}:mean"].astype(float), strict=True))
    front = sorted((xy[i] for i in pareto_front(xy, maximize)), key=lambda p: (p[0], p[1]))
    figure.add_trace(go.Scatter(
        x=[p[0] for p in front], y=[p[1] for p in front], mode="lines+markers", name="Pareto front",
        # A step line traces the boundary of the dominated region: horizontal first when a point
        # covers everything to its right (x minimised), vertical first when x is maximised.
        line={"shape": "vh" if maximize[0] else "hv", "dash": "dash", "color": FRONT_COLOUR, "width": 1.5},
        marker={"symbol": "circle-open", "size": 16, "color": FRONT_COLOUR},
        hoverinfo="skip",
    ))
    return figure


def config_summary(config_json: object) -> str:
    """`lr=0.1, weight_decay=0.0005` from a trial's config JSON (the raw text if it is not a JSON object)."""
    if not isinstance(config_json, str):
        return ""
    try:
        config = json.loads(config_json)
    except ValueError:
        return config_json
    return ", ".join(f"{k}={v}" for k, v in config.items()) if isinstance(config, dict) else config_json


def trial_hover(method: str, trial: object, value: float, config_json: object) -> str:
    config = config_summary(config_json)
    if len(config) > 240:
        config = config[:240] + "…"
    return (
        f"<b>{plotly_text(method)}</b> trial {plotly_text(trial)}<br>{TUNE_OBJECTIVE}: {value:.4g}"
        f"<br>{plotly_text(config)}"
    )


def by_method(curves: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The budget-curve rows of each method, methods in name order (as the colours are assigned)."""
    if curves.empty:
        return []
    return sorted(((str(m), g) for m, g in curves.groupby("method", sort=False)), key=lambda item: item[0])


def by_study(curves: pd.DataFrame) -> list[tuple[int, pd.DataFrame]]:
    """One method's curve rows per tuning study (`tuning.repeats`); curves without studies are one."""
    if "study" not in curves or curves.empty:
        return [(0, curves)]
    return [(int(study), group) for study, group in curves.groupby("study", sort=True)]


def tuning_figure(curves: pd.DataFrame, colours: Mapping[str, str]) -> go.Figure | None:
    """Each tuning trial's objective per method (dots), best so far against trial number (line).

    `curves` are `harness.studies.budget_curves` rows of one benchmark and protocol; failed trials
    count on the x axis (they used budget) but have no dot. None when no trial has a value.
    """
    figure = go.Figure(layout=base_layout(
        "Budget: best so far (line) vs tuning trials (dots)", "trial number (in search order)",
        axis_title(TUNE_OBJECTIVE),
    ))
    for method, group in by_method(curves):
        ok = group[group["value"].notna()]
        if ok.empty:
            continue
        colour = colours.get(method, FRONT_COLOUR)
        configs = ok["config_json"] if "config_json" in ok else [None] * len(ok)
        figure.add_trace(go.Scatter(
            x=ok["trial"].tolist(), y=ok["value"].tolist(), mode="markers", name=plotly_text(method),
            legendgroup=method, marker={"size": 7, "color": colour, "opacity": 0.75},
            text=[trial_hover(method, t, v, c) for t, v, c in zip(ok["trial"], ok["value"], configs, strict=True)],
            hovertemplate="%{text}<extra></extra>",
        ))
        for _, best in by_study(group[group["best_so_far"].notna()]):  # one line per tuning study
            figure.add_trace(go.Scatter(
                x=best["trial"].tolist(), y=best["best_so_far"].tolist(), mode="lines",
                name=plotly_text(f"{method} best"), legendgroup=method, showlegend=False,
                line={"shape": "hv", "color": colour, "width": 2}, hoverinfo="skip",
            ))
    return figure if figure.data else None


def budget_samples_figure(curves: pd.DataFrame, colours: Mapping[str, str]) -> go.Figure | None:
    """Best-so-far objective against cumulative training samples seen while tuning, one line per method.

    Equal trial counts are not equal compute when early stopping or a method's own cost differ; this
    axis shows what each method's tuning actually consumed. None when no trial counted samples.
    """
    figure = go.Figure(layout=base_layout(
        "Budget: best so far vs samples seen in tuning", "training samples seen while tuning (cumulative)",
        axis_title(TUNE_OBJECTIVE),
    ))
    figure.layout.xaxis.tickformat = "~s"
    for method, group in by_method(curves):
        for _, points in by_study(group[group["best_so_far"].notna() & group["cumulative_samples_seen"].notna()]):
            if points.empty:
                continue
            hover = [
                f"<b>{plotly_text(method)}</b> after trial {int(t)}<br>{x:,.0f} samples<br>best {TUNE_OBJECTIVE}: {y:.4g}"
                for t, x, y in zip(points["trial"], points["cumulative_samples_seen"], points["best_so_far"], strict=True)
            ]
            figure.add_trace(go.Scatter(
                x=points["cumulative_samples_seen"].tolist(), y=points["best_so_far"].tolist(), mode="lines+markers",
                name=plotly_text(method), line={"shape": "hv", "color": colours.get(method, FRONT_COLOUR), "width": 2},
                marker={"size": 5}, text=hover, hovertemplate="%{text}<extra></extra>",
            ))
    return figure if figure.data else None


def sensitivity_figure(curves: pd.DataFrame, colours: Mapping[str, str]) -> go.Figure | None:
    """Box and points of every successful trial's objective per method: how much tuning matters.

    A tall box means the method's score depends on finding the right hyper-parameters. None when
    no trial has a value.
    """
    figure = go.Figure(layout=base_layout(
        "Sensitivity: validation score of every tuning trial", "method", axis_title(TUNE_OBJECTIVE),
    ))
    figure.layout.showlegend = False
    for method, group in by_method(curves):
        ok = group[group["value"].notna()]
        if ok.empty:
            continue
        configs = ok["config_json"] if "config_json" in ok else [None] * len(ok)
        figure.add_trace(go.Box(
            y=ok["value"].tolist(), name=plotly_text(method), boxpoints="all", jitter=0.4, pointpos=0,
            marker={"color": colours.get(method, FRONT_COLOUR), "size": 6}, line={"width": 1.5},
            text=[trial_hover(method, t, v, c) for t, v, c in zip(ok["trial"], ok["value"], configs, strict=True)],
            hovertemplate="%{text}<extra></extra>",
        ))
    return figure if figure.data else None
