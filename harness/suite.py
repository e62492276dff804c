"""Suites: the strict schema, `--set` overrides, validation with key paths, freezing and hashing.

One config pipeline: defaults -> suite YAML -> `--set a.b=c` overrides -> validate -> freeze -> hash.
Every error names the YAML key path (`methods[2].config.temprature`) and the nearest valid name.
A suite composes the blocks each layer declares for itself (run settings and budgets in
`harness.train_settings`, scenarios in `harness.data.scenario_spec`, evaluation settings in
`harness.evaluation`) with its own: benchmarks, teachers, methods, tuning, final runs and output.
"""

from __future__ import annotations

import copy
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.data import DATASETS
from harness.data.scenario_spec import ScenarioSpec
from harness.errors import SuiteError, UnknownNameError, did_you_mean
from harness.evaluation import DEFAULT_METRICS, METRICS, EvaluationSettings
from harness.evaluation.ood import SYNTHETIC_OOD_SETS
from harness.method import METHODS, MethodInfo
from harness.models import MODELS
from harness.objective import TuningObjective, tuning_columns, uncomputable_column
from harness.plugins import discover_methods
from harness.protocols import (
    DEFAULT_PROTOCOL,
    check_benchmark_protocols,
    check_suite_protocols,
    known_protocol,
)
from harness.schema import Strict
from harness.search_space import Dimension, parse_dimension
from harness.seed_plan import SequentialSeeds
from harness.train_settings import Budget, TrainSpec


def _dimension_or_none(raw: Any) -> Any:
    return None if raw is None else parse_dimension(raw)


# parsed per value, so an error's path names the dimension: `methods[1].search_space.smoothing`
ParsedDimension = Annotated[Dimension, BeforeValidator(parse_dimension)]
OptionalDimension = Annotated[Dimension | None, BeforeValidator(_dimension_or_none)]


class TeacherSpec(Strict):
    """The larger model distillation methods learn from; trained by the harness once per seed."""

    model: str
    budget: Budget
    train: TrainSpec = TrainSpec()


class BenchmarkSpec(Strict):
    """A dataset, a model and a training budget: the contract every method on it is held to."""

    name: str = ""
    dataset: str
    model: str
    budget: Budget
    tuning_budget: Budget | None = Field(None, description="budget of one tuning trial (default: `budget`)")
    train: TrainSpec = TrainSpec()
    augment: bool = Field(True, description="random crop (+ flip where label-preserving) on training batches")
    val_fraction: float = Field(0.1, gt=0, lt=1)
    tune_train_size: int | None = Field(None, gt=0, description="cap on tune_train (stratified subsample)")
    tune_val_size: int | None = Field(None, gt=0)
    teacher: TeacherSpec | None = None
    primary_metric: str = "test/accuracy"
    evaluation: EvaluationSettings = EvaluationSettings()
    scenario: ScenarioSpec | None = Field(None, description="label noise / imbalance / few data on training data")
    tune_dataset: str | None = Field(None, description="cross_dataset protocol: tune on this dataset's data "
                                     "(same channels, classes and image size), then retrain on `dataset`")
    reference_accuracy: float | None = Field(
        None, gt=0, le=1, description="clean test accuracy a well-trained baseline reaches on this benchmark: "
        "a claim whose baseline ends more than 2 points below it is 'not tested' (harness.verdicts)")

    @model_validator(mode="after")
    def _default_name(self) -> BenchmarkSpec:
        if not self.name:
            object.__setattr__(self, "name", f"{self.dataset}-{self.model}")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_scenario(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # suites without a scenario keep the hashes (and result directories) they had before it existed
        data = handler(self)
        for optional in ("scenario", "tune_dataset", "reference_accuracy"):
            if getattr(self, optional) is None:
                data.pop(optional, None)
        return data


class MethodEntry(Strict):
    """A registered method, its config overrides and search-space overrides."""

    name: str
    label: str = Field("", description="display name; lets one method appear twice with different configs")
    config: dict[str, Any] = {}
    search_space: dict[str, OptionalDimension] = Field({}, description="null removes a default dimension")
    tuning_objective: TuningObjective | None = Field(None, description="this method's own tuning objective "
                                                     "(default: tuning.objective)")

    @model_validator(mode="after")
    def _default_label(self) -> MethodEntry:
        if not self.label:
            object.__setattr__(self, "label", self.name)
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_objective(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # entries without their own objective keep the suite hashes and final-run config hashes they had
        return _omit_defaults(self, handler(self), tuning_objective=None)


TPE, SOBOL_TPE = "tpe", "sobol_tpe"  # the values of `tuning.sampler` (built in `harness.samplers`)


class TuningSpec(Strict):
    """Same trials for every method; TPE proposes, ASHA stops; the objective is on tune_val."""

    trials: int = Field(8, gt=0)
    sampler_seed: int = Field(0, description="seeds TPE's proposals, and every seed below left unset")
    split_seed: int | None = Field(None, description="which training examples become tune_val, for trials and "
                                   "tune-phase teachers alike (default: sampler_seed)")
    teacher_seed: int | None = Field(None, description="weight init and batch order of the tune-phase teacher "
                                     "(default: sampler_seed; final teachers use each final run's seed)")
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, gt=0, description="epochs before ASHA may stop a trial")
    reduction_factor: int = Field(2, ge=2)
    metric: str = "val/accuracy"
    mode: Literal["max", "min"] = "max"
    cpus_per_trial: float = Field(1, gt=0, description="CPUs one trial holds in all, split between its workers")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs one trial holds in all; a fraction (0.25) lets "
                                  "single-worker trials share a GPU, a multi-worker trial needs one per worker")
    workers: int = Field(1, gt=0, description="Ray Train workers per trial: above 1, each trial fits a "
                         "data-parallel TorchTrainer; 1 trains inside the Tune trial itself")
    max_concurrent: int | None = Field(None, gt=0, description="default: what the cluster's CPUs and GPUs allow")
    engine_space: dict[str, ParsedDimension] = Field(default_factory=TrainSpec.default_space)
    start_from_defaults: bool = Field(False, description="each cell's first trial runs the benchmark's `train` "
                                      "settings and the method's config (its paper's defaults); TPE proposes the "
                                      "rest, so a short search can only improve on them")
    repeats: int = Field(1, ge=1, description="independent tuning studies per cell (own sampler seed, the same "
                         "trials each); final runs retrain every study's best config for every seed, so tuner "
                         "luck is inside the intervals (n = seeds x repeats)")
    sampler: Literal["tpe", "sobol_tpe"] = Field(
        "tpe", description="tpe: Optuna's TPE, 10 random start-up trials, sampler_seed in every cell (what every "
        "suite had before); sobol_tpe: a scrambled Sobol start of max(2, trials // 4) trials, then TPE, each "
        "study seeded on its own (harness/samplers.py)")
    objective: TuningObjective | None = Field(None, description="the tune_val score that selects configs, with "
                                              "floors (default: `metric` and `mode`)")

    @property
    def cpus_per_worker(self) -> float:
        return self.cpus_per_trial / self.workers

    @property
    def gpus_per_worker(self) -> float:
        return self.gpus_per_trial / self.workers

    @model_serializer(mode="wrap")
    def _omit_default_resources(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # suites written before trials had workers and GPUs keep their hashes (and result directories)
        return _omit_defaults(self, handler(self), workers=1, gpus_per_trial=0, start_from_defaults=False,
                              split_seed=None, teacher_seed=None, repeats=1, sampler="tpe", objective=None)

    @model_validator(mode="after")
    def _one_objective(self) -> TuningSpec:
        if self.objective is not None and (self.metric, self.mode) != ("val/accuracy", "max"):
            raise ValueError("set either `objective` or `metric`/`mode`, not both: `objective` names its metric, "
                             "its mode and its floors")
        return self

    def objective_for(self, method: MethodEntry) -> TuningObjective:
        """The objective that selects `method`'s config: its own, else the suite's, else `metric`/`mode`."""
        return method.tuning_objective or self.objective or TuningObjective(metric=self.metric, mode=self.mode)

    @field_validator("engine_space")
    @classmethod
    def _engine_keys(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        for key, dimension in space.items():
            TrainSpec.check_searchable(key, dimension)
        return space


class FinalSpec(Strict):
    """Retraining of the frozen best config on the full training split, once per seed."""

    seeds: tuple[int, ...] | SequentialSeeds = Field(
        (0, 1, 2, 3, 4), description="final runs per method (5 by default), or {min, max, step}: seeds added "
        "only while a claim is inconclusive and more could resolve it (`harness.sequential`)")
    split_seed: int | None = Field(None, description="the final runs' held-out subsamples (the calibration split; "
                                   "default: tuning.sampler_seed)")
    workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0, description="GPUs each worker holds; a fraction lets a single-worker "
                                   "run share a GPU; `use_gpu: true` alone means 1")
    use_gpu: bool = False
    checkpoint_every: int = Field(1, ge=0, description="epochs between engine checkpoints (0: none)")
    max_failures: int = Field(2, ge=0, description="restarts of a final run whose worker died, from its last checkpoint")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: tuple[int, ...] | SequentialSeeds) -> tuple[int, ...] | SequentialSeeds:
        if isinstance(seeds, tuple) and not seeds:
            raise ValueError("seeds needs at least one seed")
        if isinstance(seeds, tuple) and len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds

    @property
    def seed_order(self) -> tuple[int, ...]:
        """Every seed a comparison may get, in the order they run (all of them without a sequential plan)."""
        return self.seeds.seeds if isinstance(self.seeds, SequentialSeeds) else self.seeds

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds per comparison at each look of the final phase: one look of every seed without a plan."""
        return self.seeds.looks if isinstance(self.seeds, SequentialSeeds) else (len(self.seeds),)

    @property
    def worker_gpus(self) -> float:
        """GPUs each worker holds: `gpus_per_worker`, or one with `use_gpu`."""
        return self.gpus_per_worker or (1.0 if self.use_gpu else 0.0)

    @model_serializer(mode="wrap")
    def _omit_default_resources(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _omit_defaults(self, handler(self), gpus_per_worker=0, split_seed=None)


def _omit_defaults(model: BaseModel, data: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """Drop fields still at their default from a dump, so adding a field keeps existing suites' hashes."""
    for name, default in defaults.items():
        if getattr(model, name) == default:
            data.pop(name, None)
    return data


def _known_metric(name: str) -> str:
    if name not in METRICS:
        discover_methods()  # a plugin's metric is known once its module is imported (validation may run first)
    if name not in METRICS:  # a ValueError, so the error carries its path `evaluation.metrics[i]`
        raise ValueError(str(UnknownNameError("metric", name, METRICS.names())))
    return name


class EvaluationSpec(Strict):
    metrics: tuple[Annotated[str, AfterValidator(_known_metric)], ...] = DEFAULT_METRICS


class OutputSpec(Strict):
    """Where things land: results and dashboard under `dir`; Ray Train / Tune scratch under `storage`."""

    dir: str = "results"
    dashboard: bool = True
    storage: str | None = Field(None, description="Ray Train checkpoints and Tune experiment state: a local or "
                                "shared path, or a file://, s3://, gs:// URI (default: inside the run directory)")

    @field_validator("storage")
    @classmethod
    def _storage_uri(cls, value: str | None) -> str | None:
        from harness.storage import check_storage_uri

        return None if value is None else check_storage_uri(value)


class Suite(Strict):
    """A whole benchmark: every benchmark x method is tuned, retrained per seed, evaluated and ranked."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    protocols: tuple[Annotated[str, AfterValidator(known_protocol)], ...] = Field(
        (DEFAULT_PROTOCOL,), min_length=1,
        description="registered tuning protocols (harness/protocols.py): holdout tunes on a split of train, test "
        "sealed; cross_dataset on each benchmark's tune_dataset; oracle on the test split (needs allow_oracle)")
    allow_oracle: bool = Field(False, description="permit the oracle protocol, whose scores are not honest")
    benchmarks: tuple[BenchmarkSpec, ...] = Field(min_length=1)
    methods: tuple[MethodEntry, ...] = Field(min_length=1)
    tuning: TuningSpec = TuningSpec()
    final: FinalSpec = FinalSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    output: OutputSpec = OutputSpec()

    @field_validator("protocols", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("protocols")
    @classmethod
    def _distinct_protocols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("each protocol may appear once")
        return value

    @property
    def hash(self) -> str:
        """Content hash of everything that changes results (not where they are written)."""
        return stable_hash(self.model_dump(mode="json", exclude={"output", "description"}))

    def benchmark(self, name: str) -> BenchmarkSpec:
        return next(b for b in self.benchmarks if b.name == name)


def stable_hash(value: Any, length: int = 16) -> str:
    """sha256 of canonical JSON, truncated: the same data always gives the same hash."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# ---------------------------------------------------------------- loading and errors


def load_suite(path: str | Path, overrides: Sequence[str] = ()) -> Suite:
    """Read, override, validate and freeze a suite file; raises SuiteError naming the key path."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError("", f"suite file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SuiteError("", f"not valid YAML: {error}", source=str(path)) from None
    if not isinstance(raw, dict):
        raise SuiteError("", "a suite is a YAML mapping with keys name, benchmarks, methods, ...", source=str(path))
    return validate_suite(apply_overrides(raw, overrides), source=str(path))


def validate_suite(raw: Mapping[str, Any], source: str | None = None) -> Suite:
    """Validate a suite dict: schema first, then registry names and plugin configs."""
    discover_methods()
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as error:
        raise suite_error_from(error, Suite, source) from None
    check_suite_protocols(suite, source)
    _check_resources(suite, source)
    _check_registry_names(suite, source)
    _check_methods(suite, source)
    _check_objectives(suite, source)
    _check_repeats(suite, source)
    return suite


def suite_error_from(error: ValidationError, root: type[BaseModel], source: str | None, prefix: str = "") -> SuiteError:
    """The first pydantic error as a SuiteError with a YAML key path and a 'did you mean'."""
    errors = error.errors()
    # an unknown key explains a missing one (`benchmark:` typed for `benchmarks:`), so it comes first
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [p for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]
    path = join_path(prefix, loc)
    if first["type"] == "extra_forbidden":
        known = _fields_at(root, loc[:-1])
        valid = f" valid keys: {', '.join(sorted(known))}" if known else ""
        return SuiteError(path, f"unknown key;{did_you_mean(str(loc[-1]), known)}{valid}", source)
    message = first["msg"]
    if first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and first["type"] not in ("value_error",):
        message = f"{message} (got {first['input']!r})"
    return SuiteError(path, message.removeprefix("Value error, "), source)


_UNION_TAGS = {"FloatRange", "IntRange", "Choice", "function-after", "function-before"}


def join_path(prefix: str, loc: Sequence[Any]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: Any, loc: Sequence[Any]) -> list[str]:
    """Field names of the pydantic model reached by following `loc` through the schema."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            current = None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/tuple/list/dict wrappers down to a model class when there is one."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, list, dict):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def _check_registry_names(suite: Suite, source: str | None) -> None:
    seen: set[str] = set()
    for i, bench in enumerate(suite.benchmarks):
        for key, registry, value in (("dataset", DATASETS, bench.dataset), ("model", MODELS, bench.model)):
            if value not in registry:
                raise SuiteError(f"benchmarks[{i}].{key}", str(UnknownNameError(key, value, registry.names())), source)
        if bench.teacher and bench.teacher.model not in MODELS:
            raise SuiteError(f"benchmarks[{i}].teacher.model",
                             str(UnknownNameError("model", bench.teacher.model, MODELS.names())), source)
        if bench.name in seen:
            raise SuiteError(f"benchmarks[{i}].name", f"duplicate benchmark name '{bench.name}'", source)
        seen.add(bench.name)
        check_benchmark_protocols(suite, i, bench, source)
        _check_ood_sets(i, bench, source)
        mapping = bench.scenario.label_noise.mapping if bench.scenario and bench.scenario.label_noise else None
        classes = DATASETS.get(bench.dataset).info.num_classes
        for src, dst in (mapping or {}).items():
            if max(src, dst) >= classes:
                raise SuiteError(f"benchmarks[{i}].scenario.label_noise.mapping",
                                 f"class {max(src, dst)} does not exist: '{bench.dataset}' has classes 0..{classes - 1}",
                                 source)
        continual = bench.scenario.continual if bench.scenario else None
        if continual is not None and continual.tasks > classes:
            raise SuiteError(f"benchmarks[{i}].scenario.continual.tasks",
                             f"{continual.tasks} tasks need at least one class each, but '{bench.dataset}' has "
                             f"{classes} classes", source)


def _check_repeats(suite: Suite, source: str | None) -> None:
    """A sequential final phase counts its looks in seeds of one study; with repeats its first looks would
    pair only study 0's runs, so the two are refused together until looks count (study, seed) pairs."""
    if suite.tuning.repeats > 1 and isinstance(suite.final.seeds, SequentialSeeds):
        raise SuiteError("tuning.repeats", f"{suite.tuning.repeats} studies per cell cannot be combined with a "
                         "sequential final phase (final.seeds: {min, max}) yet: give final.seeds as a list, or "
                         "leave repeats at 1", source)


def _check_objectives(suite: Suite, source: str | None) -> None:
    """Every tuning objective's columns must be scores a tuning trial computes on tune_val, on every benchmark."""
    declared = [("tuning.objective", suite.tuning.objective)]
    declared += [(f"methods[{i}].tuning_objective", entry.tuning_objective) for i, entry in enumerate(suite.methods)]
    for path, objective in declared:
        if objective is None:
            continue
        for bench in suite.benchmarks:
            column = uncomputable_column(objective, bench.evaluation)
            if column is None:
                continue
            where = f"{path}.metric" if column == objective.metric else f"{path}.floor.{column}"
            hint = did_you_mean(column, tuning_columns(bench.evaluation))
            raise SuiteError(where, f"'{column}' is not a score a tuning trial can compute on tune_val for benchmark "
                             f"'{bench.name}';{hint} name a 'val/...' column of a registered metric (val/accuracy, "
                             "val/nll, val/pgd_linf_accuracy, val/aurc, val/ood_auroc_mean, ...); continual/* and "
                             "test/* columns are measured after training, on test, never during tuning (a "
                             "continual run's val/accuracy is its accuracy over every class after the last task)",
                             source)


def _check_resources(suite: Suite, source: str | None) -> None:
    """A worker is one training process: it uses at most one GPU, and DDP ranks (NCCL) cannot share one."""
    tuning, final = suite.tuning, suite.final
    if tuning.workers > 1 and tuning.cpus_per_trial < tuning.workers:
        raise SuiteError("tuning.cpus_per_trial", f"{tuning.workers} workers need at least one CPU each: set it to "
                         f"{tuning.workers} or more (it is what the whole trial holds)", source)
    _check_worker_gpus("tuning.gpus_per_trial", tuning.workers, tuning.gpus_per_worker, "tuning.workers", source)
    _check_worker_gpus("final.gpus_per_worker", final.workers, final.gpus_per_worker, "final.workers", source)


def _check_worker_gpus(path: str, workers: int, per_worker: float, workers_key: str, source: str | None) -> None:
    if per_worker > 1:
        raise SuiteError(path, f"that is {per_worker:g} GPUs per worker, but a worker is one training process and "
                         f"uses one GPU: for more GPUs, raise {workers_key} (one GPU each)", source)
    if workers > 1 and 0 < per_worker < 1:
        raise SuiteError(path, f"that is {per_worker:g} GPU per worker, but {workers} data-parallel workers need a "
                         "whole GPU each (NCCL cannot put two ranks on one GPU); fractions are for one worker", source)


def _check_ood_sets(i: int, bench: BenchmarkSpec, source: str | None) -> None:
    """Each OOD set is synthetic or a registered dataset drawn like the benchmark's (channels, size)."""
    target = DATASETS.get(bench.dataset).info
    for j, name in enumerate(bench.evaluation.ood_sets):
        path = f"benchmarks[{i}].evaluation.ood_sets[{j}]"
        if name in SYNTHETIC_OOD_SETS:
            continue
        if name not in DATASETS:
            valid = [*SYNTHETIC_OOD_SETS, *DATASETS.names()]
            raise SuiteError(path, str(UnknownNameError("OOD set", name, valid)), source)
        other = DATASETS.get(name).info
        if (other.channels, other.image_size) != (target.channels, target.image_size):
            raise SuiteError(path, f"'{name}' images are {other.channels}x{other.image_size}x{other.image_size}, "
                             f"'{bench.dataset}' images {target.channels}x{target.image_size}x{target.image_size}: "
                             "an OOD set must look like the benchmark's inputs", source)
        if name == bench.dataset:
            raise SuiteError(path, "the benchmark's own dataset is in-distribution, not an OOD set", source)


def _check_methods(suite: Suite, source: str | None) -> None:
    labels: set[str] = set()
    for i, entry in enumerate(suite.methods):
        if entry.name not in METHODS:
            raise SuiteError(f"methods[{i}].name", str(UnknownNameError("method", entry.name, METHODS.names())), source)
        cls = METHODS.get(entry.name)
        try:
            cls.Config(**entry.config)
        except ValidationError as error:
            raise suite_error_from(error, cls.Config, source, prefix=f"methods[{i}].config") from None
        known = set(cls.Config.model_fields)
        for key in entry.search_space:
            if key not in known:
                raise SuiteError(f"methods[{i}].search_space.{key}",
                                 f"'{entry.name}' has no hyper-parameter '{key}';{did_you_mean(key, known)}"
                                 f" its hyper-parameters: {', '.join(sorted(known)) or '(none)'}", source)
        if entry.label in labels:
            raise SuiteError(f"methods[{i}].label", f"duplicate method label '{entry.label}': give each entry a distinct label", source)
        labels.add(entry.label)
        for j, bench in enumerate(suite.benchmarks):
            _check_needs(cls.info, f"method '{entry.name}' (methods[{i}])", j, bench, source)


# What each `MethodInfo.needs` entry asks of a benchmark: the key that provides it, whether it does, how to add it.
_NEEDS: dict[str, tuple[str, typing.Callable[[BenchmarkSpec], bool], str]] = {
    "teacher": ("teacher", lambda bench: bench.teacher is not None,
                "needs a teacher: declare {key} with a model and a budget"),
    "task_stream": ("scenario.continual", lambda bench: bench.scenario is not None and bench.scenario.continual is not None,
                    "trains on a task stream: declare {key} (e.g. {{tasks: 5}})"),
    "unlabelled": ("scenario.few_labels", lambda bench: bench.scenario is not None and bench.scenario.few_labels is not None,
                   "learns from unlabelled images: declare {key} (e.g. {{n_per_class: 10}})"),
}


def _check_needs(info: MethodInfo, who: str, j: int, bench: BenchmarkSpec, source: str | None) -> None:
    """Each of the method's declared needs must be met by benchmark `j`; else a SuiteError at the missing key."""
    for need in info.needs:
        if need not in _NEEDS:
            raise SuiteError(f"benchmarks[{j}]", f"{who} declares an unknown need '{need}'; known: "
                             f"{', '.join(sorted(_NEEDS))}", source)
        key, provided, advice = _NEEDS[need]
        if not provided(bench):
            raise SuiteError(f"benchmarks[{j}].{key}", f"{who} " + advice.format(key=f"benchmarks[{j}].{key}"), source)


def method_search_space(entry: MethodEntry) -> dict[str, Dimension]:
    """The method's default space with the suite's overrides applied (None removes a dimension)."""
    space: dict[str, Dimension | None] = dict(METHODS.get(entry.name).search_space)
    space.update(entry.search_space)
    return {k: v for k, v in space.items() if v is not None}


# ---------------------------------------------------------------- --set overrides


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b=c` / `methods[1].config.x=3` / `methods.1.config.x=3`; values are parsed as YAML."""
    data = copy.deepcopy(dict(raw))
    for item in overrides:
        if "=" not in item:
            raise SuiteError(item, "an override is KEY.PATH=VALUE, e.g. tuning.trials=4")
        key, _, text = item.partition("=")
        parts = _split_key(key.strip())
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        _set_path(data, parts, value, key.strip())
    return data


def _split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in key.replace("[", ".").replace("]", "").split("."):
        if token == "":
            raise SuiteError(key, "empty segment in override key")
        parts.append(int(token) if token.isdigit() else token)
    return parts


def _set_path(data: Any, parts: list[str | int], value: Any, key: str) -> None:
    node = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = join_path("", parts[: depth + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                size = len(node) if isinstance(node, list) else 0
                raise SuiteError(here, f"--set {key}: no item {part} here (the list has {size})")
        elif not isinstance(node, dict):
            raise SuiteError(here, f"--set {key}: cannot set a key inside a {type(node).__name__}")
        if last:
            node[part] = value
        else:
            if isinstance(part, str) and part not in node:
                node[part] = {}
            node = node[part]


def suite_as_yaml(suite: Suite) -> str:
    """The resolved, frozen suite as YAML (written beside the results)."""
    return yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False)
