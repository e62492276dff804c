"""Table cells the site's pages share: numbers in their column's unit, intervals, verdicts, links.

Fractions (accuracies, rates) are shown in %, as docs/claims.md shows them; everything else with
`dashboards.table.format_number`. Every value from a store passes through `esc`.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from dashboards.site import paths
from dashboards.table import esc, format_number
from harness.columns import column_info
from harness.comparisons import MetricDifference


def in_percent(metric: str) -> bool:
    return column_info(metric).unit == "fraction" or metric.endswith("accuracy")


def number(metric: str, value: float, *, signed: bool = False) -> str:
    """One value of `metric` as text: % with two decimals for fractions, else four significant digits."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value * 100.0:.2f}" if in_percent(metric) else format_number(value)
    return f"+{text}" if signed and value > 0 else text


def interval(metric: str, low: float, high: float, *, signed: bool = False) -> str:
    return f"[{number(metric, low, signed=signed)}, {number(metric, high, signed=signed)}]"


def unit_note(metric: str) -> str:
    """The unit a metric's cells are shown in."""
    if in_percent(metric):
        return "%"
    return column_info(metric).unit


def verdict_html(verdict: str) -> str:
    css = verdict.replace(" ", "-")
    return f'<span class="verdict {esc(css)}">{esc(verdict)}</span>'


def direction_html(direction: str) -> str:
    return f'<span class="{esc(direction)}">{esc(direction)}</span>' if direction else "within interval"


@dataclass(frozen=True)
class Cell:
    """One table cell: its HTML (escaped) and its plain text (for the CSV download)."""

    html: str
    text: str


def text_cell(value: object) -> Cell:
    return Cell(esc(value), str(value))


def link_cell(text: object, href: str) -> Cell:
    return Cell(f'<a href="{esc(href)}">{esc(text)}</a>', str(text))


@dataclass(frozen=True)
class SiteTable:
    """A table of the site: rendered as a semantic <table> (caption, scoped heads, row heads) and written
    as `downloads/<name>.csv`."""

    name: str  # the CSV's file stem, unique across the site
    caption: str  # plain text
    heads: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    row_heads: bool = True  # the first cell of each row heads it

    @property
    def csv_path(self) -> str:
        return paths.download(f"{self.name}.csv")

    def html(self, page: str) -> str:
        head = "".join(f'<th scope="col">{esc(text)}</th>' for text in self.heads)
        body = []
        for cells in self.rows:
            first = f'<th scope="row">{cells[0].html}</th>' if self.row_heads and cells else ""
            rest = cells[1:] if self.row_heads else cells
            body.append(f"<tr>{first}{''.join(f'<td>{cell.html}</td>' for cell in rest)}</tr>")
        download = f' <a class="csv" href="{esc(paths.link(page, self.csv_path))}">CSV</a>'
        return (f'<div class="table-wrap"><table class="site-table" data-table="{esc(self.name)}">'
                f"<caption>{esc(self.caption)}{download}</caption><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table></div>")

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.heads)
        writer.writerows([cell.text for cell in cells] for cells in self.rows)
        return buffer.getvalue()


def difference_cells(difference: MetricDifference) -> list[Cell]:
    """Method mean, baseline mean, paired difference with its interval, n, and what the interval shows."""
    metric = difference.metric
    diff = (f"{number(metric, difference.difference, signed=True)} "
            f"{interval(metric, difference.ci[0], difference.ci[1], signed=True)}")
    return [
        text_cell(number(metric, difference.method_mean)), text_cell(number(metric, difference.baseline_mean)),
        text_cell(diff), text_cell(difference.n_pairs),
        Cell(direction_html(difference.direction), difference.direction or "within interval"),
    ]


DIFFERENCE_HEADS = ("metric", "method mean", "baseline mean", "paired difference [95% CI]", "n pairs", "interval shows")
