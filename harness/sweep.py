"""`python -m harness.sweep SUITE --epochs 1,4,16 [--out DIR] [--set KEY=VALUE ...]`: one suite run per budget.

A claim can hold at a short budget and vanish at a longer one (a regulariser that only speeds up early
training), or the other way round. This runs the suite once per final budget (every benchmark's
`budget` set to that many epochs, the tuning budget unchanged), each its own run directory under `--out`
with its own hash; `python -m dashboards.claims DIR` then judges every claim at each budget and shows
the budget curves (`harness.claims.budget_curves`). Exit 0 when every run succeeded, else the worst
`harness.run` exit code; 2 on bad input, before anything runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from harness.errors import HarnessInputError
from harness.run import main as run_main
from harness.suite import load_suite

EXIT_BAD_INPUT = 2


def parse_epochs(text: str) -> list[float]:
    """`1,4,16` -> [1.0, 4.0, 16.0]: distinct positive numbers, in the order given."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--epochs {text!r}: a comma-separated list of numbers, e.g. 1,4,16") from None
    if not values or any(value <= 0 for value in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"--epochs {text!r}: distinct positive epoch counts, e.g. 1,4,16")
    return values


def budget_overrides(suite_path: Path, epochs: float) -> list[str]:
    """`--set` overrides giving every benchmark of the suite a final budget of `epochs`."""
    raw = yaml.safe_load(suite_path.read_text()) or {}
    count = len(raw.get("benchmarks") or [])
    return [f"benchmarks[{index}].budget={{epochs: {epochs:g}}}" for index in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="suite YAML file, e.g. suites/regularization.yaml")
    parser.add_argument("--epochs", type=parse_epochs, required=True, help="final budgets, e.g. 1,4,16")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="overrides applied to every run (as for harness.run)")
    parser.add_argument("--out", type=Path, default=None, help="results root (default: the suite's output.dir)")
    parser.add_argument("--resume", action="store_true", help="continue runs of the sweep that stopped")
    args = parser.parse_args(argv)
    runs = []
    try:  # validate every budget's suite before any runs, so a typo costs nothing
        for epochs in args.epochs:
            overrides = [*args.overrides, *budget_overrides(args.suite, epochs)]
            load_suite(args.suite, overrides)
            runs.append(overrides)
    except (HarnessInputError, OSError, yaml.YAMLError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    worst = 0
    for overrides in runs:
        argv_run = [str(args.suite), *(f"--set={item}" for item in overrides), "--no-dashboard"]
        argv_run += ["--out", str(args.out)] if args.out is not None else []
        argv_run += ["--resume"] if args.resume else []
        worst = max(worst, run_main(argv_run))
    return worst


if __name__ == "__main__":
    sys.exit(main())
