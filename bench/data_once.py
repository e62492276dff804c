"""What a job pays to get its data: read from the dataset's files (before) or mapped from Ray's object store (now).

Every measurement runs in a Ray task on this machine, as a tuning trial or a final run does, and is
timed from the job's first data call to its last. A final run, in a fresh Ray Train worker, always read
its train and test splits from the files; a tuning trial did so in each new trial actor (a reused actor
found its train split cached in the process and paid only the carve of tune_train and tune_val, which
both ways still pay). Mapped, each job gets the splits the driver put once (`harness.data.shared`).
File reads and mapped reads alternate, and each file read starts with the process's cache cleared.

    python bench/data_once.py [--dataset fashion_mnist|digits] [--repeats 7] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from doc_sections import table, write_section
from overhead import log, machine_facts

from harness import cluster
from harness.data import DataAccess, clear_cache
from harness.data.access import Phase
from harness.data.shared import SharedSplits, SplitHandles

SECTION_TITLE = "## Data once per node: files vs Ray's object store (bench/data_once.py)"
JOBS: dict[str, tuple[Phase, tuple[str, ...]]] = {"final run": ("final", ("train", "test")),
                                                  "tuning trial": ("tune", ("tune_train", "tune_val"))}


def job_data_seconds(dataset: str, phase: Phase, splits: tuple[str, ...], shared: SplitHandles | None) -> float:
    """Seconds one job spends getting `splits` of `phase`: from the files (cache cleared first) or mapped."""
    clear_cache()
    start = time.perf_counter()
    access = DataAccess(dataset, phase, shared=shared)
    for split in splits:
        access.split(split)
    return time.perf_counter() - start


@dataclass
class Results:
    dataset: str
    repeats: int
    driver_s: float  # the driver's one-time read, put and digest of the final phase's splits
    put_bytes: int
    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (job, "files"/"mapped") -> walls
    machine: dict[str, str] = field(default_factory=dict)

    def median_ms(self, job: str, way: str) -> float:
        return statistics.median(self.seconds[(job, way)]) * 1000


def measure(dataset: str, repeats: int) -> Results:
    import ray

    machine = machine_facts()
    cluster.connect(num_cpus=1)
    try:
        remote = ray.remote(num_cpus=1)(job_data_seconds)
        shared = SharedSplits()
        start = time.perf_counter()
        final = shared.final(dataset)
        driver_s = time.perf_counter() - start
        assert final is not None
        put_bytes = sum(sum(array.nbytes for array in ray.get(split.ref)) for split in final.splits)
        handles = {"final": final, "tune": shared.tuning(dataset)}
        results = Results(dataset, repeats, driver_s, put_bytes, machine=machine)
        ray.get(remote.remote(dataset, "final", ("train",), None))  # warm the worker: imports, registry
        for repeat in range(repeats):
            for job, (phase, splits) in JOBS.items():
                ways = ("files", "mapped") if repeat % 2 == 0 else ("mapped", "files")
                for way in ways:
                    wall = ray.get(remote.remote(dataset, phase, splits, handles[phase] if way == "mapped" else None))
                    results.seconds.setdefault((job, way), []).append(wall)
            log(f"repeat {repeat + 1}/{repeats} done")
    finally:
        cluster.shutdown()
    machine["load_end"] = f"{os.getloadavg()[0]:.2f}"
    return results


def report_markdown(r: Results, command: str) -> str:
    m = r.machine
    facts = (f"{m['cores']} cores ({m['cpu']}), {m['memory']}, no GPU; Python {m['python']}, torch {m['torch']}, "
             f"ray {m['ray']}; 1-minute load average {m['load_start']} at the start, {m['load_end']} at the end.")
    rows = []
    for job, (_, splits) in JOBS.items():
        files, mapped = r.median_ms(job, "files"), r.median_ms(job, "mapped")
        rows.append([job, " + ".join(splits), f"{files:.1f}", f"{mapped:.1f}", f"{files - mapped:.1f}",
                     f"{files / mapped:.1f}x"])
    note = (f"The driver reads and puts the final phase's splits ({r.put_bytes / 2**20:.1f} MiB) once per suite in "
            f"{r.driver_s * 1000:.0f} ms (the read, `ray.put` and the sha256 digest the audit records); on another "
            "node the first job waits for Ray to pull them into that node's store, which this one-node run does not "
            "measure. The tuning row still carves tune_train and tune_val from the mapped train split (a "
            "stratified split and copies), which a trial in a reused actor paid before too: the saving there is the "
            "file read of each new actor.")
    parts = [SECTION_TITLE, "", f"Reproduce: `{command}`", "",
             f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {facts}", "",
             f"Each job's data calls on {r.dataset} inside a Ray task, median of {r.repeats} (files and mapped "
             "alternating; ratios from this one run):", "",
             table(["Job", "Splits", "From files (ms)", "Mapped (ms)", "Saved per job (ms)", "Files / mapped"], rows),
             "", note]
    return "\n".join(parts) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/data_once.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("fashion_mnist", "digits"), default="fashion_mnist")
    parser.add_argument("--repeats", type=int, default=7, help="measurements of each job and way (7)")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE",
                        help="update this file's data_once section, e.g. docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/data_once.py" + (f" --dataset {args.dataset}" if args.dataset != "fashion_mnist" else "") \
        + (f" --repeats {args.repeats}" if args.repeats != 7 else "") + (f" --write {args.write}" if args.write else "")
    section = report_markdown(measure(args.dataset, args.repeats), command)
    print(section)
    if args.write:
        write_section(args.write, section, "data_once")
        log(f"wrote the data_once section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
