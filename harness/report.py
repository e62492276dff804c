"""The leaderboard printed at the end of a run (the dashboard shows the same table)."""

from __future__ import annotations

import math
import shutil

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# (column, header, scale, digits): the headline columns; every metric is in the store and dashboard.
HEADLINE = (
    ("test/accuracy", "acc %", 100, 2),
    ("test/pgd_linf_accuracy", "PGD acc %", 100, 2),
    ("test/gaussian_noise_accuracy", "noise acc %", 100, 2),
    ("test/ece", "ECE %", 100, 2),
    ("test/nll", "NLL", 1, 3),
    ("model/fwd_flops_2xmac_per_image", "MFLOPs", 1e-6, 2),
    ("latency/cpu_b1_median_ms", "b1 ms", 1, 2),
    ("train/wall_s", "train s", 1, 1),
)


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


def print_leaderboard(table: pd.DataFrame, console: Console | None = None) -> None:
    """One rich table per benchmark: rank, method, n, and mean ± std of the headline metrics."""
    console = console or wide_console()
    if table.empty:
        console.print("no final runs to rank")
        return
    for benchmark, rows in table.groupby("benchmark", sort=False):
        shown = [h for h in HEADLINE if f"{h[0]}:mean" in rows]
        out = Table(title=f"{escape(str(benchmark))} (ranked by {escape(str(rows['primary_metric'].iloc[0]))}, mean ± std over seeds)")
        for header in ("rank", "method", "n", *[h[1] for h in shown]):
            out.add_column(header, justify="left" if header == "method" else "right", no_wrap=True)
        for _, row in rows.iterrows():
            rank = "-" if not math.isfinite(row["rank"]) else str(int(row["rank"]))
            n = f"{int(row['n'])}" + (f" ({int(row['n_failed'])} failed)" if row["n_failed"] else "")
            out.add_row(rank, escape(str(row["method"])), n, *[cell(row, h[0], h[2], h[3]) for h in shown])
        console.print(out)
