"""`python -m dashboards.claims ROOT [-o docs/claims.md]`: each method's published claim against what the
harness measured, from the result stores of the suite runs under ROOT.

This module reads the stores and the suite copies the runs wrote (`suite.yaml`) and the claims the
methods declare, has `harness.claims.judge_claims` judge them, and renders one table row per claim: the
paper's claim, the method's mean and 95% interval, the paired difference with its baseline, the budget
the suite gave, n (seeds x studies), the interval method and MDE, the gates, the verdict (rules at the end
of the page) and the command that reproduces the run; where a suite ran at several budgets
(`python -m harness.sweep`), a "Budget curves" section with each claim's verdict and effect per budget.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import yaml

from harness.claims import (
    VERDICT_RULES,
    Budget,
    BudgetCurve,
    ClaimVerdict,
    TrainingLength,
    budget_curves,
    dataset_classes,
    declared_claims,
    judge_claims,
    metric_number,
    unmeasured_claims,
)
from harness.errors import HarnessInputError
from harness.store import read_results


def run_dirs(root: Path) -> Iterator[Path]:
    """Every suite run directory under `root` (one holding the suite copy the run wrote)."""
    yield from sorted(path.parent for path in root.rglob("suite.yaml") if (path.parent / "rows").is_dir()
                      or (path.parent / "results.parquet").is_file())


def claim_rows(run_dir: Path) -> list[ClaimVerdict]:
    """The judged claims of one suite run, from its store and suite copy."""
    suite = yaml.safe_load((run_dir / "suite.yaml").read_text())
    return judge_claims(read_results(run_dir), suite, declared_claims(), dataset_classes())


def missing_rows(rows: Sequence[ClaimVerdict], suites_dir: Path) -> list[ClaimVerdict]:
    """A 'not run' record for every claim no stored run measured, naming the shipped suite (in `suites_dir`)
    that would measure it, so the page has one row per method."""
    suites = [yaml.safe_load(path.read_text()) for path in sorted(suites_dir.glob("*.yaml"))]
    return unmeasured_claims(rows, declared_claims(), suites)


def _amount(length: TrainingLength) -> str:
    return f"{length.epochs:g} ep" if length.epochs is not None else f"{length.steps} steps"


def budget_text(budget: Budget | None) -> str:
    """The suite's budget for one benchmark, in a few words."""
    if budget is None:
        return ""
    text = (f"{budget.dataset}, {budget.model}, {_amount(budget.final)}; tune {budget.trials}x{_amount(budget.tuning)}; "
            + (f"{budget.seeds} seeds" if budget.max_seeds is None else f"{budget.seeds}-{budget.max_seeds} seeds, sequential"))
    if budget.scenario:
        steps = "; ".join(f"{key} " + ", ".join(f"{k}={v}" for k, v in value.items())
                          for key, value in budget.scenario.items())
        text += f"; scenario: {steps}"
    return text


def command(row: ClaimVerdict, root: Path) -> str:
    """The command that reproduces the row's run (or would measure its claim)."""
    return f"python -m harness.run suites/{row.suite}.yaml --out {root}" if row.suite else "no shipped suite"


def _verdict_cell(row: ClaimVerdict) -> str:
    # a run is one (study, seed): with repeats, each study's config is retrained for every seed
    runs = f"{row.seeds * row.studies} runs" if row.studies > 1 else f"{row.seeds} seeds"
    chance = f"; {row.at_chance} of {runs} at chance" if row.at_chance else ""
    if row.baseline_at_chance:
        chance += f"; {row.claim.baseline}: {row.baseline_at_chance} of {runs} at chance"
    reason = f" ({row.reason})" if row.reason else ""
    return f"**{row.verdict}**{reason}{chance}"


def gates_cell(row: ClaimVerdict) -> str:
    """The gates, failed ones first and marked, then those passed, then those nothing declared to check."""
    failed = [f"FAILED {gate.name}: {gate.detail}" for gate in row.gates if not gate.passed]
    passed = [gate.name for gate in row.gates if gate.passed and gate.checked]
    unchecked = [f"{gate.name} ({gate.detail})" for gate in row.gates if gate.passed and not gate.checked]
    return "; ".join(failed + ([f"passed: {', '.join(passed)}"] if passed else [])
                     + ([f"not checked: {', '.join(unchecked)}"] if unchecked else []))


def evidence_cell(row: ClaimVerdict) -> str:
    """n as seeds x studies, the interval method, and the MDE (in the metric's units)."""
    if row.seeds == 0:
        return ""
    mde = f"; MDE {_number(row.mde, row.claim.metric)}" if math.isfinite(row.mde) else ""
    look = f"; stopped at look {row.look}" if row.look is not None else ""
    return f"{row.seeds} x {row.studies}{look}; {row.interval_method}{mde}"


_number = metric_number


def budget_curve_lines(curves: Sequence[BudgetCurve]) -> list[str]:
    """The "Budget curves" section: each claim's verdict and effect (up is good) per budget, and its trend;
    nothing when no suite was run at more than one budget (`python -m harness.sweep`)."""
    if not curves:
        return []
    lines = ["", "## Budget curves", "",
             "Claims judged at several final budgets of the same suite (`python -m harness.sweep`), smallest first: "
             "verdict, effect (method - baseline, signed so that up is good) and its 95% interval. The trend "
             "describes the verdicts and the point estimates; it is not a test of a trend.", "",
             "| method | benchmark | metric | per budget | trend |", "|---|---|---|---|---|"]
    for curve in curves:
        metric = curve.claim.metric
        steps = " → ".join(f"{_amount(point.budget)}: **{point.verdict}** {_number(point.effect, metric)} "
                           f"[{_number(point.effect_ci[0], metric)}, {_number(point.effect_ci[1], metric)}] "
                           f"(n = {point.seeds})" for point in curve.points)
        lines.append(f"| `{curve.method}` | {curve.benchmark} | `{metric}` | {steps} | {curve.trend} |")
    return lines


def render(rows: Sequence[ClaimVerdict], root: Path, notes: Path | None = None) -> str:
    """The markdown page: a table of verdicts, the hand-written notes behind them (if any), the rules."""
    options = f" --notes {notes}" if notes else ""
    lines = ["# Claims re-tested", "",
             f"Generated by `python -m dashboards.claims {root} -o docs/claims.md{options}` from the result stores "
             f"under `{root}/` (dashboards: `{root}/<suite>/<hash>/dashboard/index.html`). Each method is compared "
             "with its baseline (`erm`, unless the paper compared with another method) tuned with the same budget "
             "under the held-out protocol (test split sealed during tuning), "
             "paired by seed. Accuracies in %. See the verdict rules at the end.", "",
             "| method | paper's claim | metric | method mean [95% CI] | baseline mean | paired diff [95% CI] | budget "
             "| n (seeds x studies); interval; MDE | gates | verdict | reproduce |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r.suite, r.method)):
        metric = row.claim.metric
        base = row.claim.baseline
        kind = "" if row.claim.kind == "better" else f" (no worse than {base} by > {_number(row.claim.margin, metric)})"
        lines.append(
            f"| `{row.method}` | {row.claim.text}{kind} | `{metric}` | {_number(row.mean, metric)} "
            f"[{_number(row.ci[0], metric)}, {_number(row.ci[1], metric)}] | {_number(row.baseline_mean, metric)} (`{base}`) "
            f"| {_number(row.difference, metric)} [{_number(row.difference_ci[0], metric)}, "
            f"{_number(row.difference_ci[1], metric)}] | {budget_text(row.budget)} | {evidence_cell(row)} "
            f"| {gates_cell(row)} | {_verdict_cell(row)} | `{command(row, root)}` |")
    lines += budget_curve_lines(budget_curves(rows))
    if notes is not None:
        lines += ["", "## Notes", "", notes.read_text().strip()]
    lines += ["", "## Verdicts", "", *VERDICT_RULES.splitlines()]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.claims", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a folder holding suite runs (e.g. docs/leaderboard)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="write the markdown here (default: stdout)")
    parser.add_argument("--suites", type=Path, default=Path("suites"),
                        help="shipped suites, to name the one that measures a method no run has (default: suites)")
    parser.add_argument("--notes", type=Path, default=None,
                        help="a markdown file of observations behind the verdicts, included under 'Notes'")
    args = parser.parse_args(argv)
    if args.notes is not None and not args.notes.is_file():
        print(f"error: --notes {args.notes}: no such file", file=sys.stderr)
        return 2
    runs = list(run_dirs(args.root)) if args.root.is_dir() else []
    if not runs:
        print(f"error: no suite run under {args.root} (a run directory holds suite.yaml and rows/)", file=sys.stderr)
        return 2
    try:
        rows = [row for run_dir in runs for row in claim_rows(run_dir)]
        rows += missing_rows(rows, args.suites)
    except (HarnessInputError, KeyError, pd.errors.EmptyDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    page = render(rows, args.root, args.notes)
    if args.out is None:
        sys.stdout.write(page)
    else:
        args.out.write_text(page)
        print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
