"""The leaderboard table as HTML: one row per method, "mean ± std" cells with the 95% CI beneath,
the paired comparison with the baseline, rank stability over seeds and the tuning cost.

It renders the output of `harness.leaderboard.leaderboard` and computes no statistics itself; every
string from the store goes through `esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import pandas as pd

from harness.columns import column_info, higher_is_better
from harness.leaderboard import CORRUPTION_ERROR_METRICS
from harness.protocols import DEFAULT_PROTOCOL

METRIC_GROUP_ORDER = ("test", "model", "latency", "throughput", "memory", "train")
NO_BEST_GROUPS = ("train",)  # bookkeeping columns: no "best" highlight
# How a metric was measured (latency/threads, throughput/batch_size...): kept in the store, not a column.
SETTING_NAMES = ("threads", "warmup", "iters", "batch_size", "batch_n", "device_code", "dtype_code", "kind_code")


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


def from_seed_means(metric: str) -> bool:
    """mCE and relative mCE: one value per method, computed from the seed means, with no spread to show."""
    return metric.rpartition("/")[2] in CORRUPTION_ERROR_METRICS


def seed_mean_cell(metric: str, mean: float, classes: list[str], note: str) -> str:
    body = format_number(mean, 3) if math.isfinite(mean) else "—"
    title = f"{metric}: {mean:.6g}, from the seed means against the baseline's (1 = baseline); no spread over seeds"
    title = f"{title}; {note}" if note else title
    return f'<td class="{" ".join(classes)}" title="{esc(title)}">{body}</td>'


def metric_cell(record: Mapping[str, object], metric: str, note: str, best: float, primary: str) -> str:
    mean, std = float(record[f"{metric}:mean"]), float(record[f"{metric}:std"])
    low, high = float(record[f"{metric}:ci_low"]), float(record[f"{metric}:ci_high"])
    classes = ["num"] + (["primary"] if metric == primary else [])
    classes += (["best"] if math.isfinite(mean) and mean == best else []) + (["incomplete"] if note else [])
    if from_seed_means(metric):
        return seed_mean_cell(metric, mean, classes, note)
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


def signed(value: float, decimals: int | None) -> str:
    """A difference with its sign, so `+0.012` and `-0.012` read apart at a glance."""
    text = format_number(value, decimals)
    return f"+{text}" if math.isfinite(value) and value > 0 else text


def finite(record: Mapping[str, object], column: str) -> float:
    value = record.get(column)
    number = float(value) if value is not None else math.nan
    return number if math.isfinite(number) else math.nan


def difference_cells(record: Mapping[str, object], baseline: str, primary: str) -> str:
    """Paired difference from the baseline (CI beneath) and the probability of improvement over it."""
    if record["method"] == baseline:
        return '<td class="diff num baseline">baseline</td><td class="pimprove num">—</td>'
    mean, low, high = (finite(record, f"vs_baseline:diff_{s}") for s in ("mean", "ci_low", "ci_high"))
    p_improve, pairs = finite(record, "vs_baseline:p_improve"), finite(record, "vs_baseline:n_pairs")
    pairs_text = str(int(pairs)) if math.isfinite(pairs) else "0"
    if not math.isfinite(mean):
        title = f"no seed shared with {baseline}"
        return f'<td class="diff num" title="{esc(title)}">—</td><td class="pimprove num">—</td>'
    up = higher_is_better(primary)
    verdict = "better" if (low > 0 if up else high < 0) else "worse" if (high < 0 if up else low > 0) else ""
    places = shared_decimals((high - low) / 4) if high > low else None
    title = (f"{primary}: {record['method']} - {baseline} over {pairs_text} shared seed(s): mean {mean:.6g}, "
             f"95% Student-t CI [{low:.6g}, {high:.6g}]" + (f"; CI excludes 0: {verdict}" if verdict else ""))
    p_title = f"probability that a run of {record['method']} beats a run of {baseline} on {primary}"
    return (
        f'<td class="{" ".join(["diff", "num", *([verdict] if verdict else [])])}" title="{esc(title)}">'
        f'{signed(mean, places)}<span class="ci">[{signed(low, places)}, {signed(high, places)}]</span></td>'
        f'<td class="pimprove num" title="{esc(p_title)}">{format_number(p_improve, 2)}</td>'
    )


def stability_cell(record: Mapping[str, object]) -> str:
    """Rank each seed alone would give: mean ± std, and the share of seeds that agree with the overall rank."""
    mean, std, share = (finite(record, f"rank:{s}") for s in ("per_seed_mean", "per_seed_std", "stability"))
    if not math.isfinite(mean):
        return '<td class="stability num">—</td>'
    spread = f" ± {std:.1f}" if math.isfinite(std) else ""
    title = (f"rank on each seed alone: mean {mean:.3g}, std {std:.3g}; "
             f"{share:.0%} of seeds give the overall rank")
    return (f'<td class="stability num" title="{esc(title)}">{mean:.1f}{spread}'
            f'<span class="ci">{share:.0%} of seeds agree</span></td>')


def tuning_cell(record: Mapping[str, object], spread: Mapping[str, float] | None) -> str:
    """What tuning consumed (trials, failures, wall time, samples, FLOPs) and how much its trials spread."""
    trials, failed = int(record.get("tuning:trials") or 0), int(record.get("tuning:failed") or 0)
    wall, samples, flops = (finite(record, f"tuning:{s}") for s in ("wall_s", "samples_seen", "flops"))
    costs = [text for value, text in ((wall, f"{format_number(wall, 0)} s"),
                                      (samples, f"{format_number(samples, 0)} samples"),
                                      (flops, f"{format_number(flops, 0)} FLOPs")) if math.isfinite(value)]
    failures = f' <span class="failed">+{failed} failed</span>' if failed else ""
    title = f"{trials} tuning trials ({failed} failed)" + (f": {', '.join(costs)}" if costs else "")
    if spread and int(spread.get("n", 0)):
        title += (f"; validation score over trials: min {spread['min']:.4g}, max {spread['max']:.4g}, "
                  f"std {spread['std']:.3g}, IQR {spread['iqr']:.3g}")
    beneath = f'<span class="ci">{" · ".join(costs)}</span>' if costs else ""
    return f'<td class="tuning num" title="{esc(title)}">{trials - failed}{failures}{beneath}</td>'


def extra_columns(board: pd.DataFrame, baseline: str | None) -> tuple[bool, bool, bool]:
    """Which of (comparison with the baseline, rank stability, tuning cost) this table has data for."""
    def any_value(column: str) -> bool:
        return column in board and pd.to_numeric(board[column], errors="coerce").notna().any()

    compare = baseline is not None and baseline in set(board["method"]) and any_value("vs_baseline:diff_mean")
    tuning = "tuning:trials" in board and bool((board["tuning:trials"].fillna(0) > 0).any())
    return compare, any_value("rank:per_seed_mean"), tuning


def extra_heads(baseline: str | None, compare: bool, stability: bool, tuning: bool) -> str:
    heads = ""
    if compare:
        heads += (f'<th class="num" scope="col" title="paired by seed, 95% Student-t CI beneath">'
                  f'Δ vs<br>{esc(baseline)}</th>'
                  f'<th class="num" scope="col" title="probability of improvement (Agarwal et al. 2021)">'
                  f'P(&gt;<br>{esc(baseline)})</th>')
    if stability:
        heads += '<th class="num" scope="col" title="rank per seed: mean ± std">Rank<br>per seed</th>'
    if tuning:
        heads += '<th class="num" scope="col" title="tuning trials that succeeded; cost beneath">Tuning<br>trials</th>'
    return heads


def caption_text(
    primary: str, baseline: str | None, flags: tuple[bool, bool, bool], protocol_note: str, mce: bool = False
) -> str:
    compare, stability, tuning = flags
    parts = [
        f"Ranked by {esc(primary)} ({'higher' if higher_is_better(primary) else 'lower'} is better). "
        "Cells: mean ± std over seeds; below: 95% Student-t CI of the mean; hover for exact values. "
        "Bold: best mean per column."
    ]
    if compare:
        parts.append(f"Δ: difference from {esc(baseline)} in {esc(primary)}, paired by seed, with its 95% Student-t "
                     "CI below (green: the CI excludes 0 on the better side); P(&gt;): the chance that a run beats a "
                     f"run of {esc(baseline)}.")
    if stability:
        parts.append("Rank per seed: the rank each seed alone would give, and how many seeds agree with the overall rank.")
    if tuning:
        parts.append("Tuning: successful trials, wall time and training samples the tuning consumed.")
    if mce:
        parts.append(f"mCE: mean corruption error relative to {esc(baseline)} (Hendrycks &amp; Dietterich 2019; "
                     "1 = the baseline, lower is better), from the seed means, so without a spread.")
    return " ".join([protocol_note, *parts]) if protocol_note else " ".join(parts)


def leaderboard_table(
    benchmark: str, board: pd.DataFrame, metrics: Sequence[str], primary: str, *,
    baseline: str | None = None, protocol: str = DEFAULT_PROTOCOL, protocol_note: str = "",
    spread: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """The ranked table of one benchmark and protocol, one row per method, every store string escaped.

    Beside the primary metric, when the board has them: the paired difference from `baseline`, rank
    stability, and the tuning cost (with the `spread` of trial scores per method in its hover).
    """
    heads = []
    for metric in metrics:
        group, _, name = metric.partition("/")
        info = column_info(metric)
        arrow, direction = ("↑", "higher") if info.higher_is_better else ("↓", "lower")
        unit = f" ({info.unit})" if info.unit else ""
        css = "num primary" if metric == primary else "num"
        heads.append(
            f'<th class="{css}" scope="col" title="{esc(metric)}: {direction} is better{esc(unit)}">'
            f"{esc(group)}/<br>{esc(name)} {arrow}</th>"
        )
    flags = extra_columns(board, baseline)
    compare, stability, tuning = flags
    after = 1 if metrics and metrics[0] == primary else 0  # comparisons sit right after the primary metric
    heads.insert(after, extra_heads(baseline, compare, stability, tuning))
    bests = {metric: best_value(board, metric) for metric in metrics}
    body = []
    for record in board.to_dict("records"):
        n, n_failed = int(record["n"]), int(record["n_failed"])
        note = incomplete_note(n, n_failed)
        rank = f"{int(record['rank'])}" if math.isfinite(float(record["rank"])) else "—"
        badge = f' <span class="badge" title="{esc(note)}">incomplete</span>' if note else ""
        failed = f' <span class="failed">+{n_failed} failed</span>' if n_failed else ""
        cells = [metric_cell(record, metric, note, bests[metric], primary) for metric in metrics]
        extra = (difference_cells(record, str(baseline), primary) if compare else "") + (
            stability_cell(record) if stability else "") + (
            tuning_cell(record, (spread or {}).get(str(record["method"]))) if tuning else "")
        cells.insert(after, extra)
        row_class = ' class="incomplete"' if note else ""
        body.append(
            f'<tr{row_class}><td class="rank">{rank}</td>'
            f'<th class="method" scope="row">{esc(record["method"])}{badge}</th>'
            f'<td class="n">{n}{failed}</td>{"".join(cells)}</tr>'
        )
    return (
        f'<table class="leaderboard" data-benchmark="{esc(benchmark)}" data-protocol="{esc(protocol)}">'
        f"<caption>{caption_text(primary, baseline, flags, protocol_note, any(map(from_seed_means, metrics)))}</caption>"
        f'<thead><tr><th scope="col">Rank</th><th scope="col">Method</th><th scope="col" class="n">n</th>'
        f'{"".join(heads)}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )
