"""The one module that talks to Ray Tune: seeded TPE (OptunaSearch) proposes, ASHA stops early.

A whole suite tunes in a single Tune experiment. Every cell (benchmark x protocol x method) keeps
its own Optuna study, its own ASHA brackets and its own trial budget, while the trial actors are
shared and reused across cells: a Python worker starts and imports torch once per concurrent slot
per suite, not once per cell, and one cell's tail overlaps the next cell's first trials.

Studies live in a journal file under the run directory, so a resumed suite continues each study
where it stopped (finished trials are never rerun) and a search space that changed since the study
began is refused instead of mixing two studies. Each trial becomes a store row the moment it ends.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from harness.cluster import slots
from harness.errors import HarnessInputError
from harness.jobs import RunSpec, tuning_trial
from harness.objective import OBJECTIVE_KEY
from harness.plan import LEGACY_STARTUP_TRIALS, SamplerChoice
from harness.plan import to_tune_space as to_tune_space  # re-exported: tests and bench build spaces from here
from harness.provenance import node_id
from harness.samplers import build_sampler
from harness.search_space import Choice, Dimension, FloatRange, IntRange
from harness.storage import Storage, local_storage
from harness.store import fsync_directory, make_durable_dir
from harness.suite import TuningSpec, stable_hash

CELL_KEY, TRIAL_KEY = "_cell", "_trial"  # config entries the searcher adds; not hyper-parameters
STUDY_FILE = "studies.journal"
AUDIT_COLUMNS = ("data_files_read", "audit_digest")
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class TuningCell:
    """One cell to tune: what a trial trains, its search space, and how many trials are still due."""

    key: str  # study name, e.g. "holdout:fashion_mnist:erm"
    spec: RunSpec
    space: Mapping[str, Dimension]  # flat `train.x` / `method.y` keys, suite vocabulary
    trials: int  # trials still to run in this experiment
    teacher: Any = None  # teacher weights (bytes) or an ObjectRef resolving to them, or None
    next_index: int = 0  # first free trial number (a cell with nothing to tune has no study to number its trials)
    sampler: SamplerChoice | None = None  # the study's sampler (None: TPE seeded with tuning.sampler_seed)
    mode: str | None = None  # the direction of the cell's objective (None: tuning.mode)


@dataclass
class TrialRecord:
    """What one tuning trial did, ready to become a store row."""

    cell: str
    index: int  # the trial's number in its cell's study: stable across resumes
    params: dict[str, Any]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    iterations: int = 0
    wall_s: float = 0.0
    node_id: str = ""
    splits_read: str = ""
    audit: dict[str, str] = field(default_factory=dict)  # data_files_read and audit_digest, as reported


# ---------------------------------------------------------------- search spaces and studies


def _tune_domain(dim: Dimension) -> Any:
    if isinstance(dim, Choice):
        return tune.choice(list(dim.choices))
    if isinstance(dim, IntRange):
        return tune.lograndint(dim.low, dim.high + 1) if dim.log else tune.randint(dim.low, dim.high + 1)
    if isinstance(dim, FloatRange):
        return tune.loguniform(dim.low, dim.high) if dim.log else tune.uniform(dim.low, dim.high)
    raise TypeError(f"unknown search dimension {dim!r}")


def space_signature(space: Mapping[str, Dimension]) -> str:
    """Canonical JSON of a search space: equal spaces, equal strings."""
    return json.dumps({k: v.model_dump(mode="json") for k, v in sorted(space.items())}, sort_keys=True)


def open_storage(run_dir: Path) -> JournalStorage:
    """The run's Optuna storage: an append-only journal file (Optuna fsyncs every append), safe to
    reopen after a crash; its directory entry is fsynced too, so the file itself survives one."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    make_durable_dir(run_dir)
    created = not (run_dir / STUDY_FILE).exists()
    storage = JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE)))
    if created:
        fsync_directory(run_dir)
    return storage


def repair_journal(run_dir: Path) -> str | None:
    """Cut a damaged studies journal back to its last whole record; say what was done, or None if whole.

    A journal is a log, so any prefix of it is a consistent state of every study. A record cut short
    by a crash (or garbled) and everything after it are dropped: Optuna would refuse the file, or
    append to the broken line. The original is kept beside it. Trials recorded only in the dropped part
    are stored rows that stay, or missing work that the resumed run does again."""
    path = run_dir / STUDY_FILE
    if not path.exists():
        return None
    lines = path.read_bytes().splitlines(keepends=True)
    good = 0
    for line in lines:
        if not line.endswith(b"\n") or not _is_json(line):
            break
        good += 1
    if good == len(lines):
        return None
    kept = run_dir / f"{STUDY_FILE}.damaged-{stable_hash(path.read_bytes().hex(), 8)}"
    os.replace(path, kept)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        out.writelines(lines[:good])
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_directory(run_dir)
    return (f"{path}: record {good + 1} of {len(lines)} is cut short or garbled; kept the {good} whole records "
            f"before it (the original is {kept.name}), and trials recorded after it run again")


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def prepare_study(storage: JournalStorage, key: str, space: Mapping[str, Dimension], mode: str,
                  first: Mapping[str, Any] | None = None) -> list[optuna.trial.FrozenTrial]:
    """Create or reopen the cell's study; return its finished trials.

    A new study gets `first` (a point of `space`, e.g. the defaults) queued as its first trial; a
    reopened one already has it, so a resumed run never queues it twice.

    Refuses (HarnessInputError) a study whose recorded search space differs from `space`: its trials
    were sampled from another distribution, and TPE would mix the two. Trials left running by a
    process that died are marked failed and not counted, and their configurations are queued to run
    again, so an interrupted and resumed study proposes what an uninterrupted one would have.
    """
    signature = space_signature(space)
    direction = "maximize" if mode == "max" else "minimize"
    study = optuna.create_study(storage=storage, study_name=key, direction=direction, load_if_exists=True)
    recorded = study.user_attrs.get("search_space")
    if recorded is None:
        study.set_user_attr("search_space", signature)
        if first:
            study.enqueue_trial(dict(first))
    else:
        _refuse_changed_space(key, recorded, signature)
    finished = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state in FINISHED_STATES and not trial.user_attrs.get("interrupted"):
            finished.append(trial)
        elif trial.state == TrialState.RUNNING:  # its process died: run the same configuration again
            storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(dict(trial.params), skip_if_exists=False)
    return finished


def check_study_spaces(run_dir: Path, spaces: Mapping[str, Mapping[str, Dimension]]) -> None:
    """Before a resumed run touches anything: refuse it if any cell's search space changed since its
    study began (a method's default space edited in code keeps the suite hash but changes the space)."""
    if not (run_dir / STUDY_FILE).exists():
        return
    storage = open_storage(run_dir)
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name in spaces and "search_space" in summary.user_attrs:
            _refuse_changed_space(summary.study_name, summary.user_attrs["search_space"],
                                  space_signature(spaces[summary.study_name]))


def _refuse_changed_space(key: str, recorded: str, signature: str) -> None:
    if recorded != signature:
        raise HarnessInputError(
            f"the search space of '{key}' changed since its tuning study began (recorded {recorded}, now "
            f"{signature}); its finished trials were drawn from the old space and TPE would mix the two. "
            "Start a separate run with --out DIR, or delete the run directory to start over")


# ---------------------------------------------------------------- one searcher and one scheduler per cell


class CellSearcher(Searcher):
    """Hands out trials cell by cell, each from that cell's own OptunaSearch (its study's seeded sampler),
    which learns from the cell's objective (`OBJECTIVE_KEY`, in the cell's direction).

    Cells are served in the given order, so cells whose teacher is still training come last.
    """

    def __init__(self, cells: Sequence[TuningCell], tuning: TuningSpec, storage: JournalStorage,
                 sampler_dir: Path) -> None:
        super().__init__(metric=OBJECTIVE_KEY, mode="max")
        self._sampler_dir = sampler_dir
        self._samplers: dict[str, optuna.samplers.BaseSampler] = {}
        self._order = [cell.key for cell in cells]
        self._left = {cell.key: cell.trials for cell in cells}
        self._searchers: dict[str, OptunaSearch | None] = {}
        self._next_number: dict[str, int] = {}
        for cell in cells:
            domains = {k: _tune_domain(v) for k, v in cell.space.items()}
            choice = cell.sampler or SamplerChoice(tuning.sampler, tuning.sampler_seed, LEGACY_STARTUP_TRIALS)
            self._samplers[cell.key] = load_sampler(sampler_dir, cell.key, choice, cell.space)
            self._searchers[cell.key] = OptunaSearch(
                space=domains, metric=OBJECTIVE_KEY, mode=cell.mode or tuning.mode, storage=storage,
                study_name=cell.key,
                sampler=self._samplers[cell.key]) if domains else None
            study = optuna.load_study(study_name=cell.key, storage=storage)
            self._next_number[cell.key] = max(cell.next_index, len(study.get_trials(deepcopy=False)))
        self._cell_of: dict[str, str] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # every cell's searcher was built with its own objective and mode

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        key = next((k for k in self._order if self._left[k] > 0), None)
        if key is None:
            return Searcher.FINISHED
        searcher = self._searchers[key]
        if searcher is None:  # nothing to tune: the trial runs the defaults
            params, number = {}, self._next_number[key]
            self._next_number[key] += 1
        else:
            params = searcher.suggest(trial_id)
            number = searcher._ot_trials[trial_id].number  # the study's own trial number
            save_sampler(self._sampler_dir, key, self._samplers[key])
        self._left[key] -= 1
        self._cell_of[trial_id] = key
        return {CELL_KEY: key, TRIAL_KEY: number, **params}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self._searchers.get(self._cell_of.get(trial_id, ""))
        if searcher is not None and self.metric in result:
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        searcher = self._searchers.get(self._cell_of.get(trial_id, ""))
        if searcher is not None:
            searcher.on_trial_complete(trial_id, result, error)


def _sampler_path(sampler_dir: Path, key: str) -> Path:
    return sampler_dir / (_safe(key) + f"-{stable_hash(key, 8)}.pkl")


def load_sampler(sampler_dir: Path, key: str, choice: SamplerChoice,
                 space: Mapping[str, Dimension]) -> optuna.samplers.BaseSampler:
    """The study's sampler as it was after its last proposal, or a fresh one as `choice` says.

    Restoring the random state (not just the seed) keeps a resumed study from proposing the
    configurations its first trials already tried.
    """
    path = _sampler_path(sampler_dir, key)
    if path.exists():
        return pickle.loads(path.read_bytes())
    return build_sampler(choice.name, choice.seed, choice.startup_trials, space)


def save_sampler(sampler_dir: Path, key: str, sampler: optuna.samplers.BaseSampler) -> None:
    """Durably (fsync, rename, fsync of the directory): a crash leaves the old state or the new one."""
    make_durable_dir(sampler_dir)
    path = _sampler_path(sampler_dir, key)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        out.write(pickle.dumps(sampler))
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    fsync_directory(sampler_dir)


class CellScheduler(FIFOScheduler):
    """ASHA (or FIFO) run separately per cell: a trial only competes with trials of its own method, on
    its cell's objective in its direction (`modes`, by cell key; else Tune's)."""

    def __init__(self, make: Callable[[], TrialScheduler], modes: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._make = make
        self._modes = dict(modes or {})
        self._cells: dict[str, TrialScheduler] = {}
        self._metric_mode: tuple[str | None, str | None] = (None, None)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        self._metric_mode = (metric, mode)
        return True

    def _of(self, trial: Any) -> TrialScheduler:
        key = trial.config[CELL_KEY]
        if key not in self._cells:
            scheduler = self._make()
            metric, mode = self._metric_mode
            scheduler.set_search_properties(metric, self._modes.get(key, mode))
            self._cells[key] = scheduler
        return self._cells[key]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)


# ---------------------------------------------------------------- the trial and the experiment


@dataclass(frozen=True)
class TrialTraining:
    """How a trial trains: in the Tune trial's own process (`workers` is None: today's fast path), or
    through a `TorchTrainer` of `workers` whose scratch goes to `storage`."""

    workers: Any = None  # harness.final_runs.Workers; typed loosely so importing this module skips Ray Train
    storage: Storage | None = None


def trial_training(tuning: TuningSpec, storage: Storage | None) -> TrialTraining:
    """One worker trains in place (a fractional GPU is placed by Tune); several fit a TorchTrainer."""
    if tuning.workers == 1:
        return TrialTraining()
    from harness.final_runs import Workers

    assert storage is not None, "a multi-worker trial needs a storage for its Ray Train run"
    return TrialTraining(Workers(tuning.workers, tuning.cpus_per_worker, tuning.gpus_per_worker), storage)


# Tune refuses an empty request; one byte of memory places a Train-driving trial anywhere and holds
# nothing its workers need (Ray's own example gives the driver a token 0.01 of a custom resource).
DRIVER_RESOURCES = {"cpu": 0, "memory": 1}


def trial_resources(tuning: TuningSpec) -> dict[str, float]:
    """What Tune reserves for the trial itself. In place, the trial holds everything. As a Train driver it
    holds ~nothing (Ray 2.60's guidance: the trial is a light driver, the trainer's workers hold the
    resources, and `max_concurrent_trials` keeps waiting drivers from piling up); a driver holding a CPU
    would starve its own workers on a cluster with exactly their CPUs."""
    if tuning.workers > 1:
        return dict(DRIVER_RESOURCES)
    return {"cpu": tuning.cpus_per_trial, **({"gpu": tuning.gpus_per_trial} if tuning.gpus_per_trial else {})}


def trial_concurrency(tuning: TuningSpec, cluster_cpus: float, cluster_gpus: float = 0.0) -> int:
    """Trials at once: `max_concurrent`, else as many whole trials (all their workers) as the cluster holds."""

    return tuning.max_concurrent or slots(cluster_cpus, cluster_gpus, tuning.cpus_per_trial, tuning.gpus_per_trial)


def _trial_function(config: dict[str, Any], cells: Mapping[str, tuple[RunSpec, Any]],
                    training: TrialTraining | None = None) -> None:
    import ray


    spec, teacher = cells[config[CELL_KEY]]
    if isinstance(teacher, ray.ObjectRef):  # the teacher trains as its own task; wait for it here
        teacher = ray.get(teacher)
    hyperparams = {k: v for k, v in config.items() if k not in (CELL_KEY, TRIAL_KEY)}
    spec = replace(spec, hyperparams=hyperparams)
    if training is not None and training.workers is not None:
        from harness.final_runs import fit_tuning_trial

        name = f"tune-{_safe(config[CELL_KEY])}-{int(config[TRIAL_KEY]):04d}-{tune.get_context().get_trial_id()}"
        fit_tuning_trial(spec, teacher, storage=training.storage, name=name, workers=training.workers)
        return
    where = node_id()

    def report(metrics: dict[str, Any]) -> None:
        tune.report({**metrics, "node_id": where})

    tuning_trial(spec, report, teacher)


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def tune_cells(
    cells: Sequence[TuningCell],
    tuning: TuningSpec,
    *,
    storage: JournalStorage,
    sampler_dir: Path,
    experiment_dir: Path | Storage,
    name: str,
    cluster_cpus: float,
    cluster_gpus: float = 0.0,
    train_storage: Storage | None = None,
    on_trial_done: Callable[[TrialRecord], None],
) -> None:
    """Run every cell's due trials in one Tune experiment; `on_trial_done` gets each trial as it ends.

    Tune keeps its experiment state in `experiment_dir` (a local folder or a `Storage`); multi-worker
    trials keep their Ray Train runs in `train_storage` (default: beside the experiment)."""
    cells = [cell for cell in cells if cell.trials > 0]
    if not cells:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def make_scheduler() -> TrialScheduler:
        if tuning.scheduler == "fifo":
            return FIFOScheduler()
        return ASHAScheduler(time_attr="training_iteration", max_t=10_000, grace_period=tuning.grace_period,
                             reduction_factor=tuning.reduction_factor)

    experiment = experiment_dir if isinstance(experiment_dir, Storage) else local_storage(experiment_dir)
    training = trial_training(tuning, train_storage or experiment.child(f"{name}-train"))
    by_key = {cell.key: (cell.spec, cell.teacher) for cell in cells}
    trainable = tune.with_resources(tune.with_parameters(_trial_function, cells=by_key, training=training),
                                    trial_resources(tuning))
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(metric=OBJECTIVE_KEY, mode="max",  # each cell's own mode is set below
                                    search_alg=CellSearcher(cells, tuning, storage, sampler_dir),
                                    scheduler=CellScheduler(make_scheduler,
                                                            {cell.key: cell.mode or tuning.mode for cell in cells}),
                                    num_samples=sum(cell.trials for cell in cells),
                                    max_concurrent_trials=trial_concurrency(tuning, cluster_cpus, cluster_gpus),
                                    # a Train-driving trial that ASHA stops is still inside fit(): its actor
                                    # cannot be reset for the next trial, and ending it ends its workers
                                    reuse_actors=training.workers is None),
        run_config=tune.RunConfig(name=name, verbose=0, callbacks=[TrialSink(on_trial_done)],
                                  **experiment.ray_storage()),
    )
    tuner.fit()


class TrialSink(tune.Callback):
    """Turns each finished or failed trial into a TrialRecord for the driver (which stores it)."""

    def __init__(self, on_done: Callable[[TrialRecord], None]) -> None:
        self.on_done = on_done

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks; the store stays behind
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.on_done = lambda record: None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _release_workers(trial.last_result)
        self.on_done(trial_record(trial.config, trial.last_result, None))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _release_workers(trial.last_result)
        self.on_done(trial_record(trial.config, trial.last_result, _error_of(trial)))


def _release_workers(result: Mapping[str, Any] | None) -> None:
    """A multi-worker trial that ended (finished, stopped early, failed) leaves no workers holding resources."""
    group = (result or {}).get("train_placement_group")
    if group:
        from harness.final_runs import release_placement_group

        release_placement_group(str(group))


def trial_record(config: Mapping[str, Any], result: Mapping[str, Any] | None, error: str | None) -> TrialRecord:
    result = dict(result or {})
    return TrialRecord(
        cell=str(config[CELL_KEY]), index=int(config[TRIAL_KEY]),
        params={k: v for k, v in config.items() if k not in (CELL_KEY, TRIAL_KEY)},
        status="failed" if error else "ok", error=error,
        metrics={k: float(v) for k, v in result.items() if "/" in k and isinstance(v, int | float)},
        iterations=int(result.get("training_iteration", 0) or 0), wall_s=float(result.get("time_total_s", 0.0) or 0.0),
        node_id=str(result.get("node_id", "")), splits_read=str(result.get("splits_read", "")),
        audit={key: str(result[key]) for key in AUDIT_COLUMNS if key in result},
    )


def recovered_record(key: str, trial: optuna.trial.FrozenTrial, metric: str) -> TrialRecord:
    """A row for a trial the study finished but the store missed (the driver died in between)."""
    ok = trial.state != TrialState.FAIL
    metrics = {metric: float(trial.value)} if ok and trial.value is not None else {}
    return TrialRecord(cell=key, index=trial.number, params=dict(trial.params), status="ok" if ok else "failed",
                       metrics=metrics, error=None if ok else "trial failed (recovered from the tuning study)",
                       iterations=len(trial.intermediate_values))


def _error_of(trial: Any) -> str:
    """The last line of the trial's traceback, from the error file Tune has just written beside it."""
    path = Path(trial.error_file) if trial.error_file else None
    text = path.read_text() if path is not None and path.exists() else str(trial.get_error() or "")
    return _last_line(text) or "trial failed (no error recorded)"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else text)[:2000]
