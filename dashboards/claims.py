"""`python -m dashboards.claims ROOT [-o docs/claims.md]`: each method's published claim against what the
harness measured, from the result stores of the suite runs under ROOT.

For every method that declares a `Claim` (in its `MethodInfo`) and has final runs beside the claim's
baseline (`erm`, or the method the paper compared with) in some suite run, one row: the paper's claim, the
method's mean and 95% bootstrap interval over seeds on the claimed metric, the paired difference with the
baseline (same seeds) and its interval, the budget the suite gave, the verdict, and the command that
reproduces the run. Reads only the stores and the suite copies the runs wrote (`suite.yaml`); imports
methods only to read their declared claims.

Verdicts, with d = method - baseline paired by seed and [lo, hi] its 95% interval, signed so that up is good:
- claim `better`:   holds if lo > 0; contradicted if hi < 0; else "not at this scale" (no detectable gain).
- claim `no_worse`: holds if lo >= -margin; contradicted if hi < -margin; else "not at this scale".
With three seeds the percentile bootstrap is optimistic (it cannot see beyond the three differences):
read "holds" as "consistent in every seed pair", not as a significance test.
Beside each verdict: the seeds whose run ended at chance level (clean test accuracy within 2 points
of 1/classes), a diverged or collapsed run that a mean alone would hide.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from harness.errors import HarnessInputError
from harness.leaderboard import higher_is_better, phase_rows, seed_scores
from harness.method import METHODS, Claim
from harness.plugins import discover_methods
from harness.statistics import bootstrap_ci, paired_difference
from harness.store import read_results


@dataclass(frozen=True)
class ClaimRow:
    method: str
    suite: str
    benchmark: str
    claim: Claim
    mean: float
    ci: tuple[float, float]
    baseline_mean: float
    difference: float
    difference_ci: tuple[float, float]
    seeds: int
    budget: str
    verdict: str
    command: str
    at_chance: int = 0  # seeds whose accuracy ended at chance level (diverged or collapsed)


def verdict(claim: Claim, low: float, high: float) -> str:
    """The verdict for a paired-difference interval [low, high] on the claim's metric (see the module doc)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "not measured"
    if not higher_is_better(claim.metric):
        low, high = -high, -low
    bar = 0.0 if claim.kind == "better" else -claim.margin
    if (low > bar) if claim.kind == "better" else (low >= bar):
        return "holds"
    if high < bar:
        return "contradicted"
    return "not at this scale"


CHANCE_MARGIN = 0.02  # a run within 2 points of 1/classes ended at chance
CLEAN_ACCURACY = "test/accuracy"


def seeds_at_chance(group: pd.DataFrame, method: str, bench: dict) -> int:
    """How many of `method`'s seeds ended with a clean test accuracy within `CHANCE_MARGIN` of 1/classes,
    whatever the claim's metric (a collapsed run is one, robust accuracy near chance is not). Class-incremental
    runs are left out: after the last task, accuracy near 1/tasks is forgetting, not collapse."""
    from harness.data import DATASETS

    if CLEAN_ACCURACY not in group or bench["dataset"] not in DATASETS or (bench.get("scenario") or {}).get("continual"):
        return 0
    scores = seed_scores(group, CLEAN_ACCURACY)
    if method not in scores:
        return 0
    return int((scores[method].dropna() <= 1.0 / DATASETS.get(bench["dataset"]).info.num_classes + CHANCE_MARGIN).sum())


def run_dirs(root: Path) -> Iterator[Path]:
    """Every suite run directory under `root` (one holding the suite copy the run wrote)."""
    yield from sorted(path.parent for path in root.rglob("suite.yaml") if (path.parent / "rows").is_dir()
                      or (path.parent / "results.parquet").is_file())


def bench_name(bench: dict) -> str:
    return bench.get("name") or f"{bench['dataset']}-{bench['model']}"


def _bench(suite: dict, benchmark: str) -> dict:
    return next(b for b in suite["benchmarks"] if bench_name(b) == benchmark)


def budget_text(suite: dict, benchmark: str) -> str:
    """The suite's budget for one benchmark, in a few words."""
    bench = _bench(suite, benchmark)
    final = bench["budget"]
    tuning = bench.get("tuning_budget") or final
    trials = suite.get("tuning", {}).get("trials", 8)
    seeds = len(suite.get("final", {}).get("seeds", (0, 1, 2, 3, 4)))

    def amount(budget: dict) -> str:
        return f"{budget['epochs']:g} ep" if budget.get("epochs") is not None else f"{budget['steps']} steps"

    text = f"{bench['dataset']}, {bench['model']}, {amount(final)}; tune {trials}x{amount(tuning)}; {seeds} seeds"
    scenario = {key: value for key, value in (bench.get("scenario") or {}).items() if key != "seed" and value}
    if scenario:
        steps = "; ".join(f"{key} " + ", ".join(f"{k}={v}" for k, v in value.items()) for key, value in scenario.items())
        text += f"; scenario: {steps}"
    return text


def claim_rows(run_dir: Path, root: Path) -> list[ClaimRow]:
    """A ClaimRow per (benchmark, method with a claim) of one suite run, compared with its claim's baseline."""
    discover_methods()  # the claims live in the method classes
    suite = yaml.safe_load((run_dir / "suite.yaml").read_text())
    names = {entry.get("label") or entry["name"]: entry["name"] for entry in suite["methods"]}
    final = phase_rows(read_results(run_dir), "final")
    if final.empty:
        return []
    ok = final[final["status"] == "ok"]
    out = []
    for (benchmark, protocol), group in ok.groupby(["benchmark", "protocol"], sort=True):
        if protocol != "holdout":
            continue  # claims are judged under the honest protocol only
        for label in sorted(set(group["method"])):
            cls = METHODS.get(names.get(label, label)) if names.get(label, label) in METHODS else None
            claim = cls.info.claim if cls is not None else None
            if claim is None or claim.metric not in group or label == claim.baseline:
                continue
            scores = seed_scores(group, claim.metric)
            if claim.baseline not in scores or label not in scores:
                continue
            own, base = scores[label].dropna(), scores[claim.baseline].dropna()
            diff = paired_difference(own.to_dict(), base.to_dict())
            out.append(ClaimRow(
                method=label, suite=suite["name"], benchmark=str(benchmark), claim=claim, mean=float(own.mean()),
                ci=bootstrap_ci(own.to_numpy()), baseline_mean=float(base.mean()), difference=diff.mean,
                difference_ci=(diff.ci_low, diff.ci_high), seeds=diff.n_pairs, budget=budget_text(suite, str(benchmark)),
                verdict=verdict(claim, diff.ci_low, diff.ci_high),
                at_chance=seeds_at_chance(group, label, _bench(suite, str(benchmark))),
                command=f"python -m harness.run suites/{suite['name']}.yaml --out {root}"))
    return out


def _verdict_cell(row: ClaimRow) -> str:
    chance = f"; {row.at_chance} of {row.seeds} seeds at chance" if row.at_chance else ""
    return f"**{row.verdict}**{chance}"


def _number(value: float, metric: str) -> str:
    """Accuracies in % with two decimals; other metrics (AURC, AUROC, bytes) to four significant digits."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value * 100.0:.2f}" if metric.endswith("accuracy") else f"{value:.4g}"


def missing_rows(rows: Sequence[ClaimRow], suites_dir: Path, root: Path) -> list[ClaimRow]:
    """A 'not run' row for every method with a claim that no stored run measured, naming the shipped suite
    (in `suites_dir`) that would measure it, so the page has one row per method."""
    discover_methods()
    measured = {row.method for row in rows}
    suites = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(suites_dir.glob("*.yaml"))}
    out = []
    for name in METHODS.names():
        claim = METHODS.get(name).info.claim
        if claim is None or name in measured:
            continue
        home = next((suite for suite in suites.values() if name in {m["name"] for m in suite["methods"]}
                     and suite["name"] not in ("quickstart", "smoke", "battery", "reality_check")), None)
        nan = float("nan")
        out.append(ClaimRow(method=name, suite=home["name"] if home else "", benchmark="", claim=claim, mean=nan,
                            ci=(nan, nan), baseline_mean=nan, difference=nan, difference_ci=(nan, nan), seeds=0,
                            budget=budget_text(home, bench_name(home["benchmarks"][0])) if home else "",
                            verdict="not run", command=f"python -m harness.run suites/{home['name']}.yaml --out {root}"
                            if home else "no shipped suite"))
    return out


def render(rows: Sequence[ClaimRow], root: Path, notes: Path | None = None) -> str:
    """The markdown page: a table of verdicts, the hand-written notes behind them (if any), the rules."""
    options = f" --notes {notes}" if notes else ""
    lines = ["# Claims re-tested", "",
             f"Generated by `python -m dashboards.claims {root} -o docs/claims.md{options}` from the result stores "
             f"under `{root}/` (dashboards: `{root}/<suite>/<hash>/dashboard/index.html`). Each method is compared "
             "with its baseline (`erm`, unless the paper compared with another method) tuned with the same budget "
             "under the held-out protocol (test split sealed during tuning), "
             "paired by seed. Accuracies in %. See the verdict rules at the end.", "",
             "| method | paper's claim | metric | method mean [95% CI] | baseline mean | paired diff [95% CI] | budget "
             "| verdict | reproduce |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r.suite, r.method)):
        metric = row.claim.metric
        base = row.claim.baseline
        kind = "" if row.claim.kind == "better" else f" (no worse than {base} by > {_number(row.claim.margin, metric)})"
        lines.append(
            f"| `{row.method}` | {row.claim.text}{kind} | `{metric}` | {_number(row.mean, metric)} "
            f"[{_number(row.ci[0], metric)}, {_number(row.ci[1], metric)}] | {_number(row.baseline_mean, metric)} (`{base}`) "
            f"| {_number(row.difference, metric)} [{_number(row.difference_ci[0], metric)}, "
            f"{_number(row.difference_ci[1], metric)}] | {row.budget} | {_verdict_cell(row)} | `{row.command}` |")
    if notes is not None:
        lines += ["", "## Notes", "", notes.read_text().strip()]
    lines += ["", "## Verdicts", "", *[line.strip() for line in __doc__.split("Verdicts,")[1].splitlines()[1:]]]
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
        rows = [row for run_dir in runs for row in claim_rows(run_dir, args.root)]
        rows += missing_rows(rows, args.suites, args.root)
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
