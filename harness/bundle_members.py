"""What a result bundle says about its run besides the rows: how its splits are drawn, the environment
and code that made the rows, and the seal's audit digests. Each is a pure function of the run's frozen
suite and rows (never of the machine that bundles it), so the same run always gives the same member.

The rows record which splits a job read (`splits_read`), not which examples each split held; what pins
the examples down is the split's recipe: the dataset, the seeded fraction and caps, the seed and the
scenario, from which `harness.data.DataAccess` draws the same indices on any machine holding the same
dataset files. `split_recipes` writes each recipe with its sha256, so two bundles can be compared, and,
asked to on a machine holding the dataset files, the sha256 of the examples each recipe draws.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd

from harness.audit import record_digest
from harness.data.access import DataAccess
from harness.data.sources import ImageArrays
from harness.plan import Seeds, suite_cells
from harness.protocols import get_protocol
from harness.suite import Suite


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _present(value: Any) -> bool:
    """Not None, NaN, pd.NA or empty: a value the row has."""
    return value is not None and not (pd.api.types.is_scalar(value) and bool(pd.isna(value))) and str(value) != ""


def _with_digest(recipe: dict[str, Any]) -> dict[str, Any]:
    return {**recipe, "recipe_sha256": hashlib.sha256(_canonical(recipe).encode()).hexdigest()}


def examples_sha256(arrays: ImageArrays) -> str:
    """sha256 of a split's examples: its uint8 images [N,C,H,W] (shape first), then its int64 labels."""
    digest = hashlib.sha256(repr(tuple(arrays.images.shape)).encode())
    digest.update(arrays.images.contiguous().numpy().tobytes())
    digest.update(arrays.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _drawn(access: DataAccess, splits: Iterable[str]) -> dict[str, str]:
    return {split: examples_sha256(access.split(split)) for split in splits}


def split_recipes(suite: Suite, rows: pd.DataFrame, hash_examples: bool = False) -> dict[str, Any]:
    """Per benchmark: the recipe of each protocol's tuning splits and of the final splits (each with its
    sha256), and the `splits_read` values the rows record, counted per phase. With `hash_examples`, each
    recipe also gets `examples_sha256`, per split, of what it draws here (the dataset's files must be here)."""
    seeds = Seeds.of(suite)
    benchmarks: dict[str, Any] = {}
    for cell in suite_cells(suite):
        bench = cell.benchmark
        if bench.name not in benchmarks:
            final = _with_digest({"dataset": bench.dataset, "split_seed": seeds.final_split,
                                  "scenario": _scenario(bench.scenario),
                                  "calibration_size": bench.evaluation.calibration_size})
            if hash_examples:
                access = DataAccess(bench.dataset, "final", scenario=bench.scenario, split_seed=seeds.final_split,
                                    calibration_size=bench.evaluation.calibration_size)
                final["examples_sha256"] = _drawn(access, ("train", "test") + (
                    ("calibration",) if bench.evaluation.calibration_size else ()))
            benchmarks[bench.name] = {"tuning": {}, "final": final, "splits_read": _splits_read(rows, bench.name)}
        data = get_protocol(cell.protocol).tuning_data(cell.tune_benchmark, seeds.tuning_split)
        tuning = _with_digest({
            "dataset": data.dataset, "phase": data.phase, "train_split": data.train_split,
            "score_split": data.score_split, "val_fraction": data.val_fraction, "split_seed": data.split_seed,
            "tune_train_size": data.tune_train_size, "tune_val_size": data.tune_val_size,
            "scenario": _scenario(bench.scenario)})
        if hash_examples and cell.protocol not in benchmarks[bench.name]["tuning"]:
            access = DataAccess(data.dataset, data.phase, val_fraction=data.val_fraction, split_seed=data.split_seed,
                                tune_train_size=data.tune_train_size, tune_val_size=data.tune_val_size,
                                scenario=bench.scenario)
            tuning["examples_sha256"] = _drawn(access, (data.train_split, data.score_split))
        benchmarks[bench.name]["tuning"].setdefault(cell.protocol, tuning)
    return {"note": "the rows record which splits each job read, not the examples in them: a recipe with the "
                    "dataset's files determines the examples (harness.data.DataAccess)"
                    + ("" if hash_examples else "; bundled without --hash-splits, so no examples_sha256"),
            "benchmarks": benchmarks}


def _scenario(scenario: Any) -> Any:
    return None if scenario is None else scenario.model_dump(mode="json")


def _splits_read(rows: pd.DataFrame, benchmark: str) -> dict[str, dict[str, int]]:
    if not {"benchmark", "phase", "splits_read"} <= set(rows.columns):
        return {}
    own = rows[rows["benchmark"] == benchmark]
    counted: dict[str, dict[str, int]] = {}
    for (phase, read), group in own.groupby([own["phase"].astype(str), own["splits_read"].astype(str)]):
        counted.setdefault(phase, {})[read] = len(group)
    return counted


def _counted(values: Iterable[Any]) -> list[dict[str, Any]]:
    """Distinct values (JSON text parsed when it is JSON) with how many rows hold each, most common first."""
    counts = Counter(str(value) for value in values if _present(value))
    ranked = sorted(counts, key=lambda value: (-counts[value], value))
    return [{"value": _parsed(value), "rows": counts[value]} for value in ranked]


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _column(rows: pd.DataFrame, name: str) -> list[Any]:
    return list(rows[name]) if name in rows.columns else []


def environment(rows: pd.DataFrame) -> dict[str, Any]:
    """The library versions (python, torch, ray, ...) and hardware the rows name, with row counts."""
    return {"library_versions": _counted(_column(rows, "library_versions")),
            "driver_hardware": _counted(_column(rows, "driver_hardware")),
            "worker_hardware": _counted(_column(rows, "hardware"))}


def code_version(rows: pd.DataFrame) -> dict[str, Any]:
    """The git commits the rows name ('unknown' where the run had no checkout), with row counts."""
    commits = _counted(_column(rows, "git_commit"))
    return {"commits": commits, "several": len(commits) > 1,
            "dirty": any(str(entry["value"]).endswith("+dirty") for entry in commits)}


def audit_digests(rows: pd.DataFrame) -> dict[str, Any]:
    """Each audited row's digest and whether its record still matches it; how many rows carry none."""
    records = []
    for row in rows.to_dict("records"):
        if _present(row.get("data_files_read")):
            digest = row.get("audit_digest")
            records.append({"row_id": str(row["row_id"]), "audit_digest": digest,
                            "matches": record_digest(str(row["data_files_read"])) == digest})
    records.sort(key=lambda record: record["row_id"])
    return {"rows": len(rows), "audited": len(records),
            "matching": sum(record["matches"] for record in records),
            "without_record": len(rows) - len(records), "records": records}
