"""What every page of the site reads, computed once per run by the harness's pure functions.

Per run: the leaderboard (`harness.leaderboard.leaderboard`, as its dashboard shows it), the judged claims
(`harness.claims.judge_claims`) and the metrics a summary table shows; across runs: the methods and the
claims they declare. Pages render these records and compute nothing themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from dashboards.claims import dataset_classes, declared_claims
from dashboards.page import DEFAULT_BASELINE, primary_metrics, table_columns, with_required_columns
from dashboards.site import paths
from dashboards.sources import RunSource
from dashboards.table import table_metrics
from harness.claims import ClaimVerdict, judge_claims
from harness.comparisons import MetricDifference, differences_from, seed_tables, successful_final
from harness.leaderboard import DEFAULT_PRIMARY, leaderboard, metric_columns
from harness.method import METHODS, Claim


@dataclass(frozen=True)
class RunView:
    """One run with its leaderboard and judged claims."""

    run: RunSource
    rows: pd.DataFrame  # the run's rows, every core column present
    board: pd.DataFrame
    verdicts: tuple[ClaimVerdict, ...]
    primaries: dict[str, str]  # benchmark -> primary metric
    metrics: tuple[str, ...]  # the summary metrics its dashboard's tables show (curve points left out)
    _tables: dict = field(default_factory=dict, compare=False, repr=False)  # (benchmark, protocol) -> seed tables

    @property
    def key(self) -> str:
        return f"{self.run.suite_name}/{self.run.suite_hash}"

    @property
    def page(self) -> str:
        return paths.run_page(self.run.suite_name, self.run.suite_hash)

    @property
    def leaderboard_csv(self) -> str:
        return paths.leaderboard_csv(self.run.suite_name, self.run.suite_hash)

    @cached_property
    def final(self) -> pd.DataFrame:
        return successful_final(self.rows)

    def methods(self) -> list[str]:
        return sorted({str(m) for m in self.board["method"]}) if len(self.board) else []

    def blocks(self) -> list[tuple[str, str]]:
        """(benchmark, protocol) pairs with a leaderboard, in the leaderboard's order."""
        if self.board.empty:
            return []
        return list(dict.fromkeys(zip(self.board["benchmark"].astype(str), self.board["protocol"].astype(str),
                                      strict=True)))

    def block_board(self, benchmark: str, protocol: str) -> pd.DataFrame:
        board = self.board
        return board[(board["benchmark"] == benchmark) & (board["protocol"] == protocol)]

    def shown_metrics(self, benchmark: str, protocol: str) -> list[str]:
        """The summary metrics of one block's table, primary first (as the run's dashboard orders them)."""
        primary = self.primaries.get(benchmark, DEFAULT_PRIMARY)
        return table_metrics(self.block_board(benchmark, protocol), list(self.metrics), primary)

    def block_final(self, benchmark: str, protocol: str) -> pd.DataFrame:
        final = self.final
        return final[(final["benchmark"] == benchmark) & (final["protocol"] == protocol)]

    def differences(self, benchmark: str, protocol: str, method: str, baseline: str) -> list[MetricDifference]:
        """`method - baseline` on every shown metric of one block, paired by seed."""
        return differences_from(self.seed_tables(benchmark, protocol), method, baseline)

    def seed_tables(self, benchmark: str, protocol: str) -> dict[str, pd.DataFrame]:
        """The seed x method table of every shown metric of one block, built once."""
        key = (benchmark, protocol)
        if key not in self._tables:
            self._tables[key] = seed_tables(self.block_final(benchmark, protocol), self.shown_metrics(benchmark, protocol))
        return self._tables[key]

    def registry_name(self, label: str) -> str:
        """The registered method a suite label names (a suite may run one method under several labels)."""
        names = {entry.get("label") or entry["name"]: entry["name"] for entry in self.run.suite.get("methods", [])}
        return names.get(label, label)


def view_of(run: RunSource, claims: dict[str, Claim], classes: dict[str, int]) -> RunView:
    """Leaderboard and verdicts of one run, computed as its dashboard and docs/claims.md compute them."""
    rows = with_required_columns(run.rows)
    final = rows[rows["phase"] == "final"]
    primaries = primary_metrics(final)
    metrics = tuple(m for m in metric_columns(final) if final[m].notna().any())
    ran = rows[rows["phase"].isin(["final", "tune"])]
    board = (leaderboard(ran, primary=primaries, metrics=list(metrics), baseline=DEFAULT_BASELINE)
             if len(final) else pd.DataFrame(columns=["benchmark", "protocol", "method"]))
    verdicts = tuple(judge_claims(run.rows, run.suite, claims, classes)) if len(final) else ()
    return RunView(run=run, rows=rows, board=board, verdicts=verdicts, primaries=primaries,
                   metrics=tuple(table_columns(metrics, board)))


@dataclass(frozen=True)
class Catalogue:
    """Every run's view, and the methods and declared claims across them."""

    runs: tuple[RunView, ...]
    claims: dict[str, Claim]  # registry name -> declared claim

    def methods(self) -> list[str]:
        """Every method label with a final row in some run, sorted."""
        return sorted({method for view in self.runs for method in view.methods()})

    def runs_of(self, method: str) -> list[RunView]:
        return [view for view in self.runs if method in view.methods()]

    def claim_of(self, method: str) -> Claim | None:
        """The claim the method declares (through the registry name any suite runs it under)."""
        for view in self.runs_of(method):
            claim = self.claims.get(view.registry_name(method))
            if claim is not None:
                return claim
        return self.claims.get(method)

    def verdicts_of(self, method: str) -> list[ClaimVerdict]:
        return [verdict for view in self.runs for verdict in view.verdicts if verdict.method == method]

    def run_of(self, verdict: ClaimVerdict) -> RunView:
        """The run that judged this verdict record."""
        return next(view for view in self.runs if any(own is verdict for own in view.verdicts))

    def registry_name(self, method: str) -> str:
        return next((view.registry_name(method) for view in self.runs_of(method)), method)

    def is_registered(self, method: str) -> bool:
        return self.registry_name(method) in METHODS.names()


def catalogue(runs: Sequence[RunSource]) -> Catalogue:
    """The catalogue of these runs (plugins discovered, so their claims are judged too)."""
    claims, classes = declared_claims(), dataset_classes()
    return Catalogue(runs=tuple(view_of(run, claims, classes) for run in runs), claims=claims)
