"""The one module that talks to Ray Tune: seeded TPE (OptunaSearch) proposes, ASHA stops early.

Every method of a benchmark gets the same number of trials and the same per-trial budget; the
objective is measured on tune_val (the trial function runs with the test split sealed). Trial
actors are reused, so the cost of starting a Python worker and importing torch is paid once per
concurrent slot, not once per trial.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from harness.jobs import METHOD_PREFIX, TRAIN_PREFIX, RunSpec, tuning_trial
from harness.search_space import Choice, Dimension, FloatRange, IntRange
from harness.suite import TuningSpec


@dataclass
class TrialRecord:
    """What one tuning trial did, ready to become a store row."""

    index: int
    params: dict[str, Any]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    iterations: int = 0
    wall_s: float = 0.0
    node_id: str = ""
    splits_read: str = "tune_train,tune_val"


def to_tune_space(engine_space: Mapping[str, Dimension], method_space: Mapping[str, Dimension]) -> dict[str, Any]:
    """Translate the suite vocabulary into Ray Tune sampling objects (flat `train.x` / `method.y` keys)."""

    def convert(dim: Dimension) -> Any:
        if isinstance(dim, Choice):
            return tune.choice(list(dim.choices))
        if isinstance(dim, IntRange):
            return tune.lograndint(dim.low, dim.high + 1) if dim.log else tune.randint(dim.low, dim.high + 1)
        if isinstance(dim, FloatRange):
            return tune.loguniform(dim.low, dim.high) if dim.log else tune.uniform(dim.low, dim.high)
        raise TypeError(f"unknown search dimension {dim!r}")

    space = {TRAIN_PREFIX + k: convert(v) for k, v in engine_space.items()}
    space.update({METHOD_PREFIX + k: convert(v) for k, v in method_space.items()})
    return space


def _trial_function(config: dict[str, Any], spec: RunSpec, teacher_state: bytes | None) -> None:
    from harness.provenance import node_id

    where = node_id()

    def report(metrics: dict[str, float]) -> None:
        tune.report({**metrics, "node_id": where})

    tuning_trial(replace(spec, hyperparams=dict(config)), report, teacher_state)


def tune_cell(
    spec: RunSpec,
    search_space: dict[str, Any],
    tuning: TuningSpec,
    *,
    storage_dir: Path,
    name: str,
    cluster_cpus: float,
    teacher_state: bytes | None = None,
    on_trial_done: Callable[[], None] | None = None,
) -> list[TrialRecord]:
    """Run `tuning.trials` trials of one benchmark x method and return one record per trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=tuning.sampler_seed)
    searcher = OptunaSearch(sampler=sampler, metric=tuning.metric, mode=tuning.mode) if search_space else None
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=10_000, grace_period=tuning.grace_period,
                               reduction_factor=tuning.reduction_factor)
                 if tuning.scheduler == "asha" else FIFOScheduler())
    concurrency = tuning.max_concurrent or max(1, int(cluster_cpus // tuning.cpus_per_trial))
    trainable = tune.with_resources(tune.with_parameters(_trial_function, spec=spec, teacher_state=teacher_state),
                                    {"cpu": tuning.cpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space=search_space,
        tune_config=tune.TuneConfig(metric=tuning.metric, mode=tuning.mode, search_alg=searcher, scheduler=scheduler,
                                    num_samples=tuning.trials, max_concurrent_trials=concurrency, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(storage_dir.resolve()), verbose=0,
                                  callbacks=[ProgressCallback(on_trial_done)] if on_trial_done else []),
    )
    records = sorted((_record(result) for result in tuner.fit()), key=lambda r: r.index)
    for position, record in enumerate(records):
        record.index = position
    return records


def _record(result: Any) -> TrialRecord:
    metrics = dict(result.metrics or {})
    trial_name = Path(result.path).name if result.path else "trial_0"
    index = _trial_index(trial_name)  # creation order; renumbered 0..n-1 by the caller
    params = {k: v for k, v in (result.config or {}).items()}
    numeric = {k: float(v) for k, v in metrics.items() if "/" in k and isinstance(v, int | float)}
    return TrialRecord(
        index=index, params=params, status="failed" if result.error else "ok",
        metrics=numeric, error=f"{type(result.error).__name__}: {result.error}" if result.error else None,
        iterations=int(metrics.get("training_iteration", 0) or 0), wall_s=float(metrics.get("time_total_s", 0.0) or 0.0),
        node_id=str(metrics.get("node_id", "")),
    )


def _trial_index(trial_name: str) -> int:
    """Tune names trial folders `<trainable>_<8-hex id>_<N>_<params>_<date>`; N is the creation order."""
    match = re.search(r"_[0-9a-f]{8}_(\d+)_", trial_name)
    return int(match.group(1)) if match else 10**9  # unknown: sorts last


class ProgressCallback(tune.Callback):
    """Forwards trial completions (and failures) to the suite's progress display."""

    def __init__(self, on_done: Callable[[], None]) -> None:
        self.on_done = on_done

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks; the display stays behind
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.on_done = lambda: None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_done()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_done()
