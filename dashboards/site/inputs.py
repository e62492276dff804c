"""The runs a site is built from, read from run directories and folders of runs.

One small function stands here until `dashboards.sources.load_sources` (run directories, folders and
result bundles, merged) lands; the pages read only the fields of `SiteRun`, which match its `RunSource`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dashboards.claims import run_dirs
from harness.errors import HarnessInputError
from harness.store import read_results


class NoRunsError(HarnessInputError):
    """A path given to the site holds no suite run."""


@dataclass(frozen=True)
class SiteRun:
    """One suite run: its frozen suite (plain data), its rows, and where it came from."""

    suite_name: str
    suite_hash: str
    suite: dict[str, Any]
    rows: pd.DataFrame
    run_dir: Path | None
    origins: tuple[str, ...] = ()
    code_versions: tuple[str, ...] = ()
    hardware: tuple[str, ...] = field(default=())


def distinct_text(rows: pd.DataFrame, column: str) -> tuple[str, ...]:
    """Sorted distinct non-null values of a column as text."""
    if column not in rows:
        return ()
    return tuple(sorted({str(value) for value in rows[column].dropna()}))


def read_run(run_dir: Path) -> SiteRun:
    """A run directory (suite.yaml beside rows/ or results.parquet) as a SiteRun."""
    suite = yaml.safe_load((run_dir / "suite.yaml").read_text())
    rows = read_results(run_dir)
    return SiteRun(
        suite_name=str(suite["name"]), suite_hash=run_dir.name, suite=suite, rows=rows, run_dir=run_dir,
        origins=(str(run_dir),), code_versions=distinct_text(rows, "git_commit"),
        hardware=tuple(sorted({hardware_text(h) for h in distinct_text(rows, "hardware")})),
    )


def hardware_text(record: str) -> str:
    """A row's hardware record (JSON) in a few words: machine, processor, CPUs, CUDA device."""
    try:
        info = json.loads(record)
    except ValueError:
        return record
    if not isinstance(info, dict):
        return record
    cuda = info.get("cuda")
    parts = [str(info.get("machine") or ""), str(info.get("processor") or ""),
             f"{info['cpu_count']} CPUs" if info.get("cpu_count") else "", f"CUDA {cuda}" if cuda else "no CUDA"]
    return ", ".join(part for part in parts if part)


def load_runs(paths: Sequence[Path]) -> list[SiteRun]:
    """Every suite run under `paths` (each a run directory or a folder of them), sorted by suite and hash."""
    runs = []
    for path in paths:
        found = list(run_dirs(path)) if path.is_dir() else []
        if not found:
            raise NoRunsError(f"{path}: no suite run here (a run directory holds suite.yaml beside rows/ or "
                              "results.parquet)")
        runs += [read_run(run_dir) for run_dir in found]
    return sorted(runs, key=lambda run: (run.suite_name, run.suite_hash))
