"""Where the untuned baseline plateaus on a suite's benchmark: the figure behind its `reference_accuracy`.

A claim's "baseline adequate" gate (`harness.verdicts.baseline_adequacy`) compares the tuned baseline with
the accuracy the benchmark declares a well-trained baseline reaches. That number must be measured, not
guessed: this trains `erm` with the benchmark's own `train` settings (untuned), data, scenario and model at
each budget in `--epochs`, through the final run's code (`harness.jobs.final_run`, in this process, no Ray),
and reports clean test accuracy per budget and seed. The learning-rate schedule spans each budget, so every
budget is its own run. Read the plateau off the largest budgets; the suite's comment names this command.

    python bench/plateau.py suites/regularization.yaml [--benchmark NAME] [--epochs 1,3,16] [--seeds 0]
                            [--threads 2] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from doc_sections import table, write_section

from harness.jobs import RunSpec, final_run
from harness.suite import BenchmarkSpec, MethodEntry, SuiteError, load_suite
from harness.train_settings import Budget

SECTION = "plateau"  # one section per suite: plateau-<suite file stem>


@dataclass(frozen=True)
class Point:
    """One untuned erm run: its budget, seed, clean test accuracy and training wall time."""

    epochs: float
    seed: int
    accuracy: float
    train_s: float


def measure(bench: BenchmarkSpec, epochs: Sequence[float], seeds: Sequence[int], threads: int) -> list[Point]:
    """Train erm at every budget x seed on `bench` and score clean test accuracy."""
    points = []
    for budget in epochs:
        for seed in seeds:
            spec = RunSpec(benchmark=bench.model_copy(update={"budget": Budget(epochs=budget)}),
                           method=MethodEntry(name="erm"), seed=seed, metrics=("accuracy",), threads=threads)
            start = time.perf_counter()
            result = final_run(spec)
            points.append(Point(budget, seed, float(result["test/accuracy"]), time.perf_counter() - start))
            print(f"epochs {budget:g} seed {seed}: test accuracy {points[-1].accuracy:.4f} "
                  f"({points[-1].train_s:.0f} s)", flush=True)
    return points


def report_markdown(suite_path: str, bench: BenchmarkSpec, points: Sequence[Point], command: str,
                    load_start: float) -> str:
    """The section: accuracy per budget (mean over seeds), and the reference the benchmark declares."""
    budgets = sorted({p.epochs for p in points})
    rows = []
    for budget in budgets:
        scores = [p.accuracy for p in points if p.epochs == budget]
        rows.append([f"{budget:g}", ", ".join(f"{100 * s:.2f}" for s in scores), f"{100 * statistics.fmean(scores):.2f}",
                     f"{statistics.fmean(p.train_s for p in points if p.epochs == budget):.0f}"])
    declared = bench.reference_accuracy
    top = statistics.fmean(p.accuracy for p in points if p.epochs == budgets[-1])
    if declared is None:
        reading = f"`{bench.name}` declares no `reference_accuracy`."
    else:
        reading = (f"`{bench.name}` declares `reference_accuracy: {declared:g}`; erm's mean at {budgets[-1]:g} epochs is "
                   f"{100 * top:.2f}%, so a tuned baseline passes the gate at {100 * (declared - 0.02):.1f}% or more "
                   "(the gate's 2-point tolerance).")
    setting = (f"{bench.dataset}, {bench.model}, scenario {bench.scenario.model_dump(exclude_none=True) if bench.scenario else 'none'}, "
               f"augment {bench.augment}, train {bench.train.optimizer} lr {bench.train.lr:g} batch {bench.train.batch_size}")
    parts = [f"## Reference accuracy: where untuned erm plateaus, `{Path(suite_path).stem}` (bench/plateau.py)", "",
             f"Reproduce: `{command}`", "",
             f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {os.cpu_count()} cores, 1-minute load "
             f"average {load_start:.2f} at the start and {os.getloadavg()[0]:.2f} at the end; benchmark "
             f"`{bench.name}` of `{suite_path}` ({setting}), erm with the benchmark's own settings, untuned.", "",
             table(["Epochs", "Test accuracy per seed (%)", "Mean (%)", "Seconds per run"], rows), "", reading]
    return "\n".join(parts) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/plateau.py", description=__doc__.splitlines()[0])
    parser.add_argument("suite", help="a suite YAML file")
    parser.add_argument("--benchmark", default=None, help="the benchmark's name (default: the suite's first)")
    parser.add_argument("--epochs", default="1,3,16", help="budgets to train, comma-separated (1,3,16)")
    parser.add_argument("--seeds", default="0", help="seeds per budget, comma-separated (0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for each run (2)")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE",
                        help="update this file's plateau section, e.g. docs/benchmarks.md")
    args = parser.parse_args(argv)
    try:
        args.epochs = [float(part) for part in args.epochs.split(",") if part]
        args.seeds = [int(part) for part in args.seeds.split(",") if part]
    except ValueError as error:
        parser.error(f"--epochs takes numbers and --seeds integers, comma-separated: {error}")
    if not args.epochs or not args.seeds or min(args.epochs) <= 0 or args.threads < 1:
        parser.error("--epochs needs positive budgets, --seeds at least one seed, --threads at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        suite = load_suite(args.suite)
    except SuiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    names = [bench.name for bench in suite.benchmarks]
    if args.benchmark is not None and args.benchmark not in names:
        print(f"error: {args.suite}: no benchmark named {args.benchmark!r}; it has {', '.join(names)}", file=sys.stderr)
        return 2
    bench = next(b for b in suite.benchmarks if args.benchmark in (None, b.name))
    load_start = os.getloadavg()[0]
    points = measure(bench, args.epochs, args.seeds, args.threads)
    command = (f"python bench/plateau.py {args.suite}" + (f" --benchmark {args.benchmark}" if args.benchmark else "")
               + f" --epochs {','.join(f'{e:g}' for e in args.epochs)} --seeds {','.join(map(str, args.seeds))}"
               + (f" --threads {args.threads}" if args.threads != 2 else "") + (f" --write {args.write}" if args.write else ""))
    section = report_markdown(args.suite, bench, points, command, load_start)
    print(section)
    if args.write:
        write_section(args.write, section, f"{SECTION}-{Path(args.suite).stem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
