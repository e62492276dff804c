"""The protocol-gap section: how a benchmark's ranking moves when the tuning protocol changes.

Renders `harness.studies.protocol_gap` of the leaderboard: ranks under each protocol side by side
and Kendall's tau between every pair. Shown only when more than one protocol ran; oracle results
(tuned on test) are labelled as such wherever they appear.
"""

from __future__ import annotations

import math

import pandas as pd

from dashboards.table import esc
from harness.protocols import Oracle, protocol_label, vouched_honest
from harness.studies import ProtocolGap, protocol_gap

FLAGGED = "oracle"  # the page's style (class) for results whose protocol is not honest


def protocol_class(protocol: str) -> str:
    """The CSS class of a protocol's cells and labels: flagged when it tuned on test, or is not registered here."""
    return "" if vouched_honest(protocol) else FLAGGED


def rank_text(value: object) -> str:
    number = float(value) if value is not None else math.nan
    return str(int(number)) if math.isfinite(number) else "—"


def ranks_table(benchmark: str, ranks: pd.DataFrame, gap: ProtocolGap) -> str:
    """Method | rank under each protocol that ran on this benchmark."""
    present = [p for p in gap.protocols if ranks[p].notna().any()]
    heads = "".join(f'<th class="num {protocol_class(p)}" scope="col">{esc(gap.labels[p])}</th>' for p in present)
    body = "".join(
        f'<tr><th class="method" scope="row">{esc(record["method"])}</th>'
        + "".join(f'<td class="num {protocol_class(p)}" data-protocol="{esc(p)}">{rank_text(record[p])}</td>'
                  for p in present)
        + "</tr>"
        for record in ranks.sort_values(present[:1] + ["method"], na_position="last").to_dict("records")
    )
    return (f'<table class="protocol-ranks" data-benchmark="{esc(benchmark)}"><caption>Rank of each method under '
            f'each protocol (1 is best).</caption><thead><tr><th scope="col">Method</th>{heads}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def agreement_row(record: dict) -> str:
    tau = float(record["kendall_tau"])
    return (
        f'<tr><td class="{protocol_class(record["protocol_a"])}">{esc(record["label_a"])}</td>'
        f'<td class="{protocol_class(record["protocol_b"])}">{esc(record["label_b"])}</td>'
        f'<td class="num tau">{f"{tau:.2f}" if math.isfinite(tau) else "—"}</td>'
        f'<td class="num">{int(record["n_methods"])}</td></tr>'
    )


def agreement_table(benchmark: str, agreement: pd.DataFrame) -> str:
    """Kendall's tau-b between every pair of protocols: 1 means the protocol does not change the order."""
    if agreement.empty:
        return '<p class="empty">Only one protocol ran on this benchmark.</p>'
    body = "".join(agreement_row(record) for record in agreement.to_dict("records"))
    return (f'<table class="protocol-agreement" data-benchmark="{esc(benchmark)}"><caption>Kendall\'s τ-b between '
            "the rankings (1: same order, −1: reversed), over the methods ranked under both.</caption>"
            '<thead><tr><th scope="col">Protocol</th><th scope="col">vs protocol</th>'
            '<th scope="col" class="num">Kendall τ</th><th scope="col" class="num">Methods</th></tr></thead>'
            f"<tbody>{body}</tbody></table>")


def protocol_gap_section(board: pd.DataFrame) -> str:
    """The whole section, or "" when the board holds a single protocol (there is no gap to show)."""
    gap = protocol_gap(board)
    if len(gap.protocols) < 2:
        return ""
    parts = []
    for benchmark, ranks in gap.ranks.groupby("benchmark", sort=True):
        agreement = gap.agreement[gap.agreement["benchmark"] == benchmark]
        parts.append(f'<h3>{esc(benchmark)}</h3><div class="gap-tables"><div class="table-wrap">'
                     f'{ranks_table(str(benchmark), ranks, gap)}</div><div class="table-wrap">'
                     f"{agreement_table(str(benchmark), agreement)}</div></div>")
    return (
        '<section id="protocol-gap"><h2>Protocol gap</h2><p class="provenance">The same methods ranked under each '
        "tuning protocol. A ranking that changes when hyper-parameters are chosen differently is a finding about "
        f'the protocol, not the methods; <strong class="{FLAGGED}">{esc(protocol_label(Oracle.name))}</strong> chose '
        f"them on the test split and is an optimistic bound, not a result.</p>{''.join(parts)}</section>"
    )
