"""The leaderboard printed at the end of a run (the dashboard shows the same table)."""

from __future__ import annotations

import math
import shutil

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.protocols import DEFAULT_PROTOCOL, protocol_label

# (column, header, scale, digits): the headline columns; every metric is in the store and dashboard.
HEADLINE = (
    ("test/accuracy", "acc %", 100, 2),
    ("test/pgd_linf_accuracy", "PGD acc %", 100, 2),
    ("test/gaussian_noise_accuracy", "noise acc %", 100, 2),
    ("test/ece", "ECE %", 100, 2),
    ("test/nll", "NLL", 1, 3),
    ("test/adv_pgd_linf_auac", "PGD AUAC %", 100, 2),
    ("test/corruption_accuracy", "corr acc %", 100, 2),
    ("test/mce", "mCE %", 100, 1),
    ("test/ece_ts", "ECE-TS %", 100, 2),
    ("test/aurc", "AURC %", 100, 2),
    ("test/ood_auroc_mean", "OOD AUROC %", 100, 1),
    ("model/fwd_flops_2xmac_per_image", "MFLOPs", 1e-6, 2),
    ("latency/cpu_b1_median_ms", "b1 ms", 1, 2),
    ("train/wall_s", "train s", 1, 1),
)


def headline_format(metric: str) -> tuple[str, float, int]:
    """(short name, scale, digits) of a metric: the headline's when it is one, else the raw value."""
    return next(((header, scale, digits) for column, header, scale, digits in HEADLINE if column == metric),
                (metric, 1, 4))


def difference_cell(row: pd.Series, baseline: str, scale: float, digits: int) -> str:
    """`+1.23 [+0.80, +1.66]`: the mean paired difference from the baseline and its 95% Student-t CI."""
    if row["method"] == baseline:
        return "baseline"
    mean = row.get("vs_baseline:diff_mean", math.nan)
    if mean is None or not math.isfinite(mean):
        return "-"
    low, high = row.get("vs_baseline:diff_ci_low", math.nan), row.get("vs_baseline:diff_ci_high", math.nan)
    return f"{mean * scale:+.{digits}f} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def cell(row: pd.Series, column: str, scale: float, digits: int) -> str:
    mean = row.get(f"{column}:mean", math.nan)
    if mean is None or not math.isfinite(mean):
        return "-"
    std = row.get(f"{column}:std", math.nan)
    text = f"{mean * scale:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std * scale:.{digits}f}"
    return text


def wide_console(stderr: bool = False) -> Console:
    """A console at least 180 columns wide, so tables stay readable in logs and CI output."""
    width = max(180, shutil.get_terminal_size((180, 24)).columns)
    return Console(stderr=stderr, width=width, highlight=False)


def print_leaderboard(table: pd.DataFrame, console: Console | None = None, *, baseline: str | None = "erm") -> None:
    """One rich table per benchmark: rank, method, n, mean ± std of the headline metrics.

    With results under several protocols a protocol column tells them apart (ranks are within a
    protocol); when the baseline ran, a last column gives each method's paired difference from it
    on the primary metric with its 95% CI, because a gap in means over three seeds can be noise.
    """
    console = console or wide_console()
    if table.empty:
        console.print("no final runs to rank")
        return
    protocols = list(dict.fromkeys(table["protocol"])) if "protocol" in table else []
    for benchmark, rows in table.groupby("benchmark", sort=False):
        console.print(benchmark_table(str(benchmark), rows, several_protocols=len(protocols) > 1, baseline=baseline))


def benchmark_table(benchmark: str, rows: pd.DataFrame, *, several_protocols: bool, baseline: str | None) -> Table:
    primary = str(rows["primary_metric"].iloc[0])
    shown = [h for h in HEADLINE if f"{h[0]}:mean" in rows]
    compare = (baseline is not None and "vs_baseline:diff_mean" in rows and baseline in set(rows["method"])
               and rows["vs_baseline:diff_mean"].notna().any())
    name, scale, digits = headline_format(primary)
    protocol = ""
    if not several_protocols and "protocol" in rows and rows["protocol"].iloc[0] != DEFAULT_PROTOCOL:
        protocol = f", protocol {protocol_label(rows['protocol'].iloc[0])}"
    out = Table(title=escape(f"{benchmark} (ranked by {primary}{' within each protocol' if several_protocols else ''}"
                             f"{protocol}, mean ± std over seeds)"))
    headers = ["rank", *(["protocol"] if several_protocols else []), "method", "n", *[h[1] for h in shown]]
    if compare:
        headers.append(f"Δ {name} vs {baseline} [95% CI]")
    for header in headers:
        out.add_column(escape(header), justify="left" if header in ("method", "protocol") else "right", no_wrap=True)
    for _, row in rows.iterrows():
        rank = "-" if not math.isfinite(row["rank"]) else str(int(row["rank"]))
        n = f"{int(row['n'])}" + (f" ({int(row['n_failed'])} failed: incomplete)" if row["n_failed"] else "")
        cells = [rank, *([escape(protocol_label(row["protocol"]))] if several_protocols else []),
                 escape(str(row["method"])), n, *[cell(row, h[0], h[2], h[3]) for h in shown]]
        if compare:
            cells.append(escape(difference_cell(row, str(baseline), scale, digits)))
        out.add_row(*cells)
    return out
