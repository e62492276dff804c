"""Ray's fixed costs per report, per final run and per extra worker, measured through the harness's own paths.

Three measurements, each against the issue's question:
  (r) per report: how long `ray.train.report` blocks a worker's loop, bare and with a checkpoint the size
      of the job's engine state; then what the harness's reports cost a ~`--target-seconds` final run
      (one checkpoint report per epoch, `final.checkpoint_every: 1`), predicted from the per-report cost
      and measured directly as the same fit with and without them (target: at most 5%);
  (s) per final run: the wall of a one-step final run submitted as the runner submits it
      (`final_runs.submit_final`) against the same `jobs.final_run` in-process: what starting a run costs;
  (w) 2-worker scaling: the same ~`--target-seconds` job as a 1-worker and a 2-worker `TorchTrainer`
      (DDP over gloo, the global batch split between the workers, the same optimiser steps).

    python bench/ray_costs.py [--dataset fashion_mnist|digits] [--target-seconds 60] [--reports 20]
                              [--repeats 3] [--quick] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from doc_sections import table, write_section
from overhead import DEFAULT_MODELS, Job, calibrate, log, machine_facts

from harness.data import DataAccess, clear_cache
from harness.jobs import final_run
from harness.train_settings import Budget

SECTION_TITLE = "## Ray's fixed costs: reports, final-run start, 2-worker scaling (bench/ray_costs.py)"
REPORT_TARGET = 0.05  # reporting at most 5% of a 60-second run


# ---------------------------------------------------------------- (r) per report


def _report_loop(config: dict[str, Any]) -> None:
    """A Train worker that only reports: each call's blocking time, bare or with a checkpoint, to a file."""
    import ray.train

    payload = torch.zeros(config["checkpoint_bytes"] // 4) if config["checkpoint_bytes"] else None
    walls = []
    for index in range(config["reports"]):
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if payload is not None:
                torch.save({"state": payload}, Path(directory, "engine_state.pt"))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            start = time.perf_counter()
            ray.train.report({"index": index}, checkpoint=checkpoint)
            walls.append(time.perf_counter() - start)
    Path(config["out"]).write_text(json.dumps(walls))


def report_walls(reports: int, checkpoint_bytes: int, scratch: Path, name: str) -> list[float]:
    """Seconds each of `reports` calls to `ray.train.report` blocked a 1-worker fit's loop."""
    from ray.train import CheckpointConfig, RunConfig

    from harness.final_runs import Workers, trainer

    out = scratch / f"{name}.json"
    fit = trainer(_report_loop, {"reports": reports, "checkpoint_bytes": checkpoint_bytes, "out": str(out)},
                  Workers(), RunConfig(name=name, storage_path=str(scratch / "train"),
                                       checkpoint_config=CheckpointConfig(num_to_keep=2)))
    result = fit.fit()
    if result.error is not None:
        raise result.error
    walls = json.loads(out.read_text())
    log(f"    {reports} reports ({'checkpoint of ' + str(checkpoint_bytes) + ' B' if checkpoint_bytes else 'bare'}): "
        f"median {statistics.median(walls) * 1000:.0f} ms")
    return walls


def engine_state_bytes(job: Job) -> int:
    """Bytes of the job's engine checkpoint: model and SGD momentum (about twice the parameters)."""
    from overhead import new_model

    info = DataAccess(job.dataset, "final").info
    return 2 * sum(p.numel() * p.element_size() for p in new_model(job, info).parameters())


@dataclass
class FitPair:
    """The same final run with a checkpoint report every epoch and with only its closing report."""

    epochs: float
    with_reports: dict[str, Any]
    without: dict[str, Any]
    wall_with: float
    wall_without: float


def fit_pair(job: Job, scratch: Path, repeat: int) -> FitPair:
    from harness.final_runs import fit_final
    from harness.storage import local_storage

    spec = job.run_spec(Budget(steps=job.steps))
    runs: dict[int, tuple[float, dict[str, Any]]] = {}
    for every in ((1, 0) if repeat % 2 == 0 else (0, 1)):  # alternate which goes first
        start = time.perf_counter()
        metrics = fit_final(spec, None, storage=local_storage(scratch / "train"), name=f"pair-{repeat}-{every}",
                            checkpoint_every=every)
        runs[every] = (time.perf_counter() - start, metrics)
        log(f"    fit, checkpoint_every={every}: {runs[every][0]:.2f} s (loop {metrics['train/wall_s']:.2f} s)")
    epochs = float(runs[1][1]["train/epochs"])
    return FitPair(epochs, runs[1][1], runs[0][1], runs[1][0], runs[0][0])


# ---------------------------------------------------------------- (s) per final-run start


def _first_line_loop(config: dict[str, Any]) -> None:
    """A Train worker that does nothing: it notes when its loop began, reports once and ends."""
    import ray.train

    Path(config["out"]).write_text(json.dumps(time.time()))
    ray.train.report({})


@dataclass(frozen=True)
class BareFit:
    """A `TorchTrainer` fit whose loop does nothing: Ray Train's own floor under every final run."""

    wall_s: float
    first_line_s: float  # from `fit()` to the loop's first line: controller, worker actor, train context

    @property
    def end_s(self) -> float:
        return self.wall_s - self.first_line_s


def bare_fit(scratch: Path, name: str) -> BareFit:
    from ray.train import RunConfig

    from harness.final_runs import Workers, trainer

    out = scratch / f"{name}.json"
    fit = trainer(_first_line_loop, {"out": str(out)}, Workers(), RunConfig(name=name, storage_path=str(scratch / "train")))
    start = time.time()
    result = fit.fit()
    wall = time.time() - start
    if result.error is not None:
        raise result.error
    return BareFit(wall, json.loads(out.read_text()) - start)


def start_costs(job: Job, scratch: Path, repeats: int) -> tuple[list[float], list[float], list[BareFit]]:
    """(walls through `submit_final`, walls of the same one-step `final_run` in-process, bare fits), `repeats` each."""
    import ray

    from harness.final_runs import submit_final
    from harness.storage import local_storage

    one_step = replace(job, steps=1).run_spec(Budget(steps=1))
    submitted, in_process, bare = [], [], []
    for repeat in range(repeats):
        start = time.perf_counter()
        ray.get(submit_final(one_step, None, storage=local_storage(scratch / "train"), name=f"start-{repeat}"))
        submitted.append(time.perf_counter() - start)
        clear_cache()  # a worker reads the files; so does this
        start = time.perf_counter()
        final_run(one_step, device=torch.device("cpu"))
        in_process.append(time.perf_counter() - start)
        bare.append(bare_fit(scratch, f"bare-{repeat}"))
        log(f"    one-step final run: submitted {submitted[-1]:.2f} s, in-process {in_process[-1]:.2f} s; "
            f"bare fit {bare[-1].wall_s:.2f} s, its loop began after {bare[-1].first_line_s:.2f} s")
    return submitted, in_process, bare


# ---------------------------------------------------------------- (w) 2-worker scaling


def scaling(job: Job, scratch: Path, repeats: int) -> dict[int, list[dict[str, Any]]]:
    """The job as 1- and 2-worker fits, alternating; each entry: wall, loop seconds, steps, final loss."""
    from harness.final_runs import Workers, fit_final
    from harness.storage import local_storage

    spec = job.run_spec(Budget(steps=job.steps))
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for repeat in range(repeats):
        for workers in ((1, 2) if repeat % 2 == 0 else (2, 1)):
            start = time.perf_counter()
            metrics = fit_final(spec, None, storage=local_storage(scratch / "train"), name=f"scale-{repeat}-{workers}",
                                workers=Workers(count=workers))
            wall = time.perf_counter() - start
            runs[workers].append({"wall_s": wall, **metrics})
            log(f"    {workers} worker(s): {wall:.2f} s (loop {metrics['train/wall_s']:.2f} s, "
                f"{metrics['train/steps']:.0f} steps, loss {metrics['train/final_loss']:.4f})")
    return runs


# ---------------------------------------------------------------- the whole measurement


@dataclass
class Options:
    dataset: str
    target_s: float
    reports: int
    repeats: int
    quick: bool
    write: Path | None

    def command(self) -> str:
        text = (f"python bench/ray_costs.py --dataset {self.dataset} --target-seconds {self.target_s:g} "
                f"--reports {self.reports} --repeats {self.repeats}")
        return text + (" --quick" if self.quick else "") + (f" --write {self.write}" if self.write else "")


@dataclass
class Results:
    options: Options
    job: Job
    steps_per_epoch: int
    checkpoint_bytes: int
    bare: list[float]
    with_checkpoint: list[float]
    pairs: list[FitPair]
    submitted: list[float]
    in_process: list[float]
    bare_fits: list[BareFit]
    scaled: dict[int, list[dict[str, Any]]]
    machine: dict[str, str]

    def report_s(self) -> float:
        return statistics.median(self.with_checkpoint)

    def predicted_share(self) -> float:
        """Checkpoint reports in the run (one per epoch) x their cost / the run's plain length."""
        epochs = self.job.steps / self.steps_per_epoch
        return epochs * self.report_s() / self.options.target_s

    def measured_share(self) -> float:
        """Median over pairs of the worker's loop with reports / without - 1: the reports block the loop,
        while the fit's start and shutdown (measured apart, as the start cost) would only add noise."""
        return statistics.median(p.with_reports["train/wall_s"] / p.without["train/wall_s"] - 1 for p in self.pairs)

    def measured_share_wall(self) -> float:
        return statistics.median(p.wall_with / p.wall_without - 1 for p in self.pairs)

    def start_s(self) -> float:
        return statistics.median(s - p for s, p in zip(self.submitted, self.in_process, strict=True))

    def speedup(self) -> float:
        return statistics.median(r["wall_s"] for r in self.scaled[1]) / statistics.median(r["wall_s"] for r in self.scaled[2])

    def loop_speedup(self) -> float:
        return (statistics.median(r["train/wall_s"] for r in self.scaled[1])
                / statistics.median(r["train/wall_s"] for r in self.scaled[2]))


def measure(options: Options) -> Results:
    from harness import cluster

    machine = machine_facts()
    model, batch = DEFAULT_MODELS[options.dataset]
    job = Job(options.dataset, model, batch)
    access = DataAccess(options.dataset, "final")
    data, info = access.split("train"), access.info
    steps, per_step = calibrate(job, data, info, options.target_s, probe_s=0.5 if options.quick else 2.0)
    job = replace(job, steps=steps)
    steps_per_epoch = max(1, len(data) // batch)
    log(f"job: {steps} steps of {per_step * 1000:.1f} ms (~{options.target_s:g} s), {steps / steps_per_epoch:.1f} epochs")
    checkpoint_bytes = engine_state_bytes(job)
    with tempfile.TemporaryDirectory(prefix="harness-ray-costs-") as directory:
        scratch = Path(directory)
        cluster.connect()
        try:
            log("(r) per report")
            report_walls(3, 0, scratch, "warm-up")
            bare = report_walls(options.reports, 0, scratch, "bare")
            with_checkpoint = report_walls(options.reports, checkpoint_bytes, scratch, "checkpoint")
            pairs = [fit_pair(job, scratch, repeat) for repeat in range(options.repeats)]
            log("(s) per final-run start")
            submitted, in_process, bare_fits = start_costs(job, scratch, options.repeats)
            log("(w) 1 vs 2 workers")
            scaled = scaling(job, scratch, options.repeats)
        finally:
            cluster.shutdown()
    machine["load_end"] = f"{os.getloadavg()[0]:.2f}"
    return Results(options, job, steps_per_epoch, checkpoint_bytes, bare, with_checkpoint, pairs, submitted,
                   in_process, bare_fits, scaled, machine)


# ---------------------------------------------------------------- the section


def summary_table(r: Results) -> str:
    met = r.predicted_share() <= REPORT_TARGET
    measured = r.measured_share()
    rows = [
        ["`ray.train.report`, bare: blocking time per call (median)", f"{statistics.median(r.bare) * 1000:.0f} ms", "", ""],
        [f"`ray.train.report` with a {r.checkpoint_bytes / 1024:.0f} KiB engine checkpoint (median)",
         f"{r.report_s() * 1000:.0f} ms", "", ""],
        [f"reporting share of a {r.options.target_s:g} s run, one checkpoint report per epoch "
         f"({r.job.steps / r.steps_per_epoch:.1f} epochs): predicted", f"{r.predicted_share():.1%}",
         f"<= {REPORT_TARGET:.0%}", "met" if met else "**missed**"],
        ["the same, measured: the worker's loop with them / without - 1 (median of pairs)", f"{measured:+.1%}",
         f"<= {REPORT_TARGET:.0%}", "met" if measured <= REPORT_TARGET else "**missed**"],
        ["the same on the whole fit's wall (includes start-up noise)", f"{r.measured_share_wall():+.1%}", "", ""],
        ["per final run: one-step run through `submit_final` - the same `final_run` in-process (median)",
         f"{r.start_s():.2f} s", "", ""],
        ["of which Ray Train's floor: a fit whose loop does nothing (median wall)",
         f"{statistics.median(b.wall_s for b in r.bare_fits):.2f} s", "", ""],
        ["... until its loop's first line (controller actor, worker actor, train context)",
         f"{statistics.median(b.first_line_s for b in r.bare_fits):.2f} s", "", ""],
        ["2 workers vs 1, same config: wall speed-up (median walls)", f"{r.speedup():.2f}x", "", ""],
        ["2 workers vs 1: training-loop speed-up", f"{r.loop_speedup():.2f}x", "", ""],
    ]
    return table(["Measure", "Value", "Target", "Verdict"], rows)


def detail_table(r: Results) -> str:
    rows = [[f"fit with a checkpoint report per epoch / without, pair {i + 1}", f"{p.wall_with:.2f} / {p.wall_without:.2f}",
             f"{p.with_reports['train/wall_s']:.2f} / {p.without['train/wall_s']:.2f}"] for i, p in enumerate(r.pairs)]
    rows += [[f"one-step final run #{i + 1}: submitted / in-process", f"{s:.2f} / {p:.2f}", ""]
             for i, (s, p) in enumerate(zip(r.submitted, r.in_process, strict=True))]
    rows += [[f"bare fit #{i + 1}: wall / until the loop's first line", f"{b.wall_s:.2f} / {b.first_line_s:.2f}", ""]
             for i, b in enumerate(r.bare_fits)]
    for workers, runs in r.scaled.items():
        rows += [[f"{workers} worker(s) #{i + 1} ({run['train/steps']:.0f} steps, final loss {run['train/final_loss']:.4f})",
                  f"{run['wall_s']:.2f}", f"{run['train/wall_s']:.2f}"] for i, run in enumerate(runs)]
    return table(["Run", "Wall s", "Loop on the worker s"], rows)


def report_markdown(r: Results) -> str:
    m, j, o = r.machine, r.job, r.options
    facts = (f"{m['cores']} cores ({m['cpu']}), {m['memory']}, no GPU; Python {m['python']}, torch {m['torch']}, "
             f"ray {m['ray']}; 1-minute load average {m['load_start']} at the start, {m['load_end']} at the end.")
    job = (f"`{j.model}` on {j.dataset} ({r.steps_per_epoch} steps per epoch at batch {j.batch_size}), {j.steps} steps "
           f"(~{o.target_s:g} s in a plain loop), ERM, 1 torch thread per worker; reports measured over {o.reports} "
           f"calls after 3 warm-up calls; {o.repeats} repeat(s) of every fit pair, start-up and scaling run, "
           "alternating their order.")
    note = (f"Each report blocks the loop until Ray Train's controller polls (`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`, "
            "0.2 s as `harness.cluster` sets it; 2 s by Ray's default), so its cost is per report, not per second: "
            f"at {r.report_s() * 1000:.0f} ms a report, reporting stays under {REPORT_TARGET:.0%} of a run as long as "
            f"an epoch lasts at least {r.report_s() / REPORT_TARGET:.1f} s. On 2 cores the second worker competes with "
            "the first (and with Ray's own processes) for the same cores, so the scaling row is a floor for machines "
            "with a core per worker.")
    parts = [SECTION_TITLE, "", f"Reproduce: `{o.command()}`", "", f"Measured "
             f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {facts}", "", f"Job: {job}", "",
             summary_table(r), "", detail_table(r), "", note]
    return "\n".join(parts) + "\n"


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python bench/ray_costs.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DEFAULT_MODELS), default="fashion_mnist")
    parser.add_argument("--target-seconds", type=float, default=None, help="plain-loop seconds of the job (60; 3 quick)")
    parser.add_argument("--reports", type=int, default=None, help="reports timed per kind (20; 5 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each fit (3; 1 quick)")
    parser.add_argument("--quick", action="store_true", help="everything small: a smoke check of the script")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE",
                        help="update this file's ray_costs section, e.g. docs/benchmarks.md")
    args = parser.parse_args(argv)

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if args.quick else full)

    options = Options(args.dataset, float(pick(args.target_seconds, 60.0, 3.0)), int(pick(args.reports, 20, 5)),
                      int(pick(args.repeats, 3, 1)), args.quick, args.write)
    if options.target_s <= 0 or options.reports < 1 or options.repeats < 1:
        parser.error("--target-seconds, --reports and --repeats must be positive")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    section = report_markdown(measure(options))
    print(section)
    if options.write:
        write_section(options.write, section, "ray_costs")
        log(f"wrote the ray_costs section of {options.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
