"""The leaderboard table as HTML: one row per method, "mean ± std" cells with the 95% CI beneath.

It renders the output of `harness.leaderboard.leaderboard` and computes no statistics itself; every
string from the store goes through `esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import pandas as pd

from harness.leaderboard import higher_is_better

METRIC_GROUP_ORDER = ("test", "model", "latency", "throughput", "train")
NO_BEST_GROUPS = ("train",)  # bookkeeping columns: no "best" highlight
# How a metric was measured (latency/threads, throughput/batch_size...): kept in the store, not a column.
SETTING_NAMES = ("threads", "warmup", "iters", "batch_size")


def esc(value: object) -> str:
    """HTML-escape any value, quotes included, for text and attribute positions alike."""
    return html.escape(str(value), quote=True)


def table_metrics(board: pd.DataFrame, metrics: Sequence[str], primary: str) -> list[str]:
    """Result metrics with a value on this benchmark: primary first, then test, model, latency, ..."""
    present = [
        m for m in metrics
        if m.rpartition("/")[2] not in SETTING_NAMES and f"{m}:mean" in board and board[f"{m}:mean"].notna().any()
    ]

    def key(metric: str) -> tuple[int, int]:
        group = metric.split("/", 1)[0]
        rank = METRIC_GROUP_ORDER.index(group) if group in METRIC_GROUP_ORDER else len(METRIC_GROUP_ORDER)
        return (0 if metric == primary else 1 + rank, metrics.index(metric))

    return sorted(present, key=key)


def format_number(value: float, decimals: int | None = None) -> str:
    """Large counts (FLOPs, params) with a k/M/G/T suffix; else `decimals` places or 4 significant digits."""
    if value is None or not math.isfinite(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 9999.5:
        for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if magnitude >= scale:
                return f"{value / scale:.3g}{suffix}"
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return "0" if value == 0 else f"{value:.4g}"


def shared_decimals(std: float) -> int | None:
    """Decimal places that show the std with two significant digits (mean and CI get the same)."""
    if not math.isfinite(std) or std <= 0 or std >= 1000:
        return None
    return max(0, min(6, 1 - math.floor(math.log10(std))))


def incomplete_note(n: int, n_failed: int) -> str:
    if n == 0:
        return f"incomplete: no successful run ({n_failed} failed)"
    if n_failed:
        return f"incomplete: {n_failed} of {n + n_failed} runs failed"
    return ""


def best_value(board: pd.DataFrame, metric: str) -> float:
    values = board[f"{metric}:mean"].dropna().astype(float)
    if values.empty or metric.split("/", 1)[0] in NO_BEST_GROUPS:
        return math.nan
    return float(values.max() if higher_is_better(metric) else values.min())


def metric_cell(record: Mapping[str, object], metric: str, note: str, best: float, primary: str) -> str:
    mean, std = float(record[f"{metric}:mean"]), float(record[f"{metric}:std"])
    low, high = float(record[f"{metric}:ci_low"]), float(record[f"{metric}:ci_high"])
    classes = ["num"] + (["primary"] if metric == primary else [])
    classes += (["best"] if math.isfinite(mean) and mean == best else []) + (["incomplete"] if note else [])
    if not math.isfinite(mean):
        body = "—"
    else:
        places = shared_decimals(std)
        spread = f" ± {format_number(std, places)}" if math.isfinite(std) else " (n=1)"
        ci = f"[{format_number(low, places)}, {format_number(high, places)}]"
        body = f"{format_number(mean, places)}{spread}<span class=\"ci\">{ci}</span>"
    title = f"{metric}: mean {mean:.6g}, std {std:.3g}, 95% CI [{low:.6g}, {high:.6g}]"
    title = f"{title}; {note}" if note else title
    return f'<td class="{" ".join(classes)}" title="{esc(title)}">{body}</td>'


def leaderboard_table(benchmark: str, board: pd.DataFrame, metrics: Sequence[str], primary: str) -> str:
    """The ranked table of one benchmark, one row per method, every store string escaped."""
    heads = []
    for metric in metrics:
        group, _, name = metric.partition("/")
        arrow, direction = ("↑", "higher") if higher_is_better(metric) else ("↓", "lower")
        css = "num primary" if metric == primary else "num"
        heads.append(
            f'<th class="{css}" scope="col" title="{esc(metric)}: {direction} is better">'
            f"{esc(group)}/<br>{esc(name)} {arrow}</th>"
        )
    bests = {metric: best_value(board, metric) for metric in metrics}
    body = []
    for record in board.to_dict("records"):
        n, n_failed = int(record["n"]), int(record["n_failed"])
        note = incomplete_note(n, n_failed)
        rank = f"{int(record['rank'])}" if math.isfinite(float(record["rank"])) else "—"
        badge = f' <span class="badge" title="{esc(note)}">incomplete</span>' if note else ""
        failed = f' <span class="failed">+{n_failed} failed</span>' if n_failed else ""
        cells = "".join(metric_cell(record, metric, note, bests[metric], primary) for metric in metrics)
        row_class = ' class="incomplete"' if note else ""
        body.append(
            f'<tr{row_class}><td class="rank">{rank}</td>'
            f'<th class="method" scope="row">{esc(record["method"])}{badge}</th>'
            f'<td class="n">{n}{failed}</td>{cells}</tr>'
        )
    caption = (
        f"Ranked by {esc(primary)} ({'higher' if higher_is_better(primary) else 'lower'} is better). "
        "Cells: mean ± std over seeds; below: 95% bootstrap CI of the mean; hover for exact values. "
        "Bold: best mean per column."
    )
    return (
        f'<table class="leaderboard" data-benchmark="{esc(benchmark)}"><caption>{caption}</caption>'
        f'<thead><tr><th scope="col">Rank</th><th scope="col">Method</th><th scope="col" class="n">n</th>'
        f'{"".join(heads)}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )
