"""A fixture run for the site tests: the dashboard's fixture store (a method named as HTML included) with
the suite copy a real run writes beside it, so claims are judged and budgets stated."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.fixtures_results import (
    BENCHMARKS,
    METHODS,
    SEEDS,
    SUITE_HASH,
    SUITE_NAME,
    TUNE_TRIALS,
    write_fixture_store,
)

DATASETS = {"cifar10_resnet8": ("cifar10", "resnet8"), "fashion_mnist_mlp": ("fashion_mnist", "mlp")}


def fixture_suite() -> dict:
    """The suite copy of the fixture run, as plain data."""
    return {
        "name": SUITE_NAME, "protocols": ["holdout"],
        "benchmarks": [{"name": name, "dataset": DATASETS[name][0], "model": DATASETS[name][1],
                        "budget": {"epochs": 10.0, "steps": None}} for name in BENCHMARKS],
        "methods": [{"name": method} for method in METHODS],
        "tuning": {"trials": TUNE_TRIALS}, "final": {"seeds": list(SEEDS)},
    }


def write_fixture_run(root: Path) -> Path:
    """The fixture run at `root/<suite>/<hash>/` (rows and suite.yaml); returns the run directory."""
    run_dir = root / "smoke" / SUITE_HASH
    write_fixture_store(run_dir)
    (run_dir / "suite.yaml").write_text(yaml.safe_dump(fixture_suite(), sort_keys=False))
    return run_dir
