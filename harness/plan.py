"""The plan of a suite: the cells it tunes, each cell's search space and default point, the final runs
that follow and the seed of every random choice, as pure functions of the `Suite`.

Nothing here starts Ray or reads the store, so what a suite will run is tested on its own; the runner
only carries the plan out (and skips what the store already holds).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.method import METHODS, MethodInfo, build_method
from harness.objective import TuningObjective
from harness.protocols import get_protocol
from harness.search_space import Dimension, clip_to
from harness.suite import TPE, BenchmarkSpec, MethodEntry, Suite, method_search_space, stable_hash

LEGACY_STARTUP_TRIALS = 10  # Optuna's TPESampler default: the random start every `tpe` study has


@dataclass(frozen=True)
class Seeds:
    """Every seed of a suite run, each named for the one random choice it makes (the final runs' own
    seeds are `final.seeds`). A seed the suite leaves unset is `tuning.sampler_seed`, as it always was."""

    sampler: int  # TPE's proposals
    tuning_split: int  # which training examples become tune_val (trials and tune-phase teachers alike)
    trial: int  # weight init and batch order of every tuning trial (always the sampler's seed)
    teacher: int  # weight init and batch order of the tune-phase teacher (final teachers use the run's seed)
    final_split: int  # the final runs' held-out subsamples (the calibration split)

    @classmethod
    def of(cls, suite: Suite) -> Seeds:
        tuning, sampler = suite.tuning, suite.tuning.sampler_seed

        def or_sampler(seed: int | None) -> int:
            return sampler if seed is None else seed

        return cls(sampler=sampler, tuning_split=or_sampler(tuning.split_seed), trial=sampler,
                   teacher=or_sampler(tuning.teacher_seed), final_split=or_sampler(suite.final.split_seed))


def study_key(cell_key: str, study: int) -> str:
    """The name of a cell's study `study`: study 0 keeps the cell's key, so journals and stores made before
    `tuning.repeats` existed resume; repeat r is `<cell key>#r`."""
    return cell_key if study == 0 else f"{cell_key}#{study}"


@dataclass(frozen=True)
class SamplerChoice:
    """One study's sampler, as its rows record it: `tuning.sampler`, its seed and how many trials its start
    proposes before TPE models what they scored."""

    name: str
    seed: int
    startup_trials: int

    @classmethod
    def of(cls, name: str, sampler_seed: int, key: str, study: int) -> SamplerChoice:
        """`tpe` keeps today's seeding, the suite's seed in every cell (a repeat study gets one seed of its own,
        shared across cells); `sobol_tpe` seeds every study on its own, so methods do not share draws. Both
        start with 10 trials (random for `tpe`, Sobol for `sobol_tpe`; why 10, see `harness.samplers`)."""
        if name == TPE:
            seed = sampler_seed if study == 0 else int(stable_hash([sampler_seed, study], 8), 16)
            return cls(name, seed, LEGACY_STARTUP_TRIALS)
        return cls(name, int(stable_hash([sampler_seed, key, study], 8), 16), LEGACY_STARTUP_TRIALS)

    @property
    def start(self) -> str:
        return "random" if self.name == TPE else "scrambled sobol"

    def describe(self) -> str:
        """The row's `sampler_settings`: JSON of the seed and the start."""
        return json.dumps({"seed": self.seed, "startup_trials": self.startup_trials, "start": self.start},
                          sort_keys=True)


@dataclass(frozen=True)
class Cell:
    """One benchmark x protocol x method: tuned once, then retrained for every seed."""

    benchmark: BenchmarkSpec
    protocol: str
    method: MethodEntry

    @property
    def key(self) -> str:
        return f"{self.protocol}:{self.benchmark.name}:{self.method.label}"

    @property
    def tune_benchmark(self) -> BenchmarkSpec:
        """The benchmark as tuning sees it: the same task on the data its protocol tunes on (under
        cross_dataset, `tune_dataset`'s)."""
        dataset = get_protocol(self.protocol).tuning_dataset(self.benchmark)
        if dataset == self.benchmark.dataset:
            return self.benchmark
        return self.benchmark.model_copy(update={"dataset": dataset})

    @property
    def method_info(self) -> MethodInfo:
        return METHODS.get(self.method.name).info

    @property
    def needs_teacher(self) -> bool:
        return self.method_info.needs_teacher


@dataclass(frozen=True)
class FinalJob:
    """One final run: the config study `study` of the cell chose, retrained with `seed`."""

    cell: Cell
    seed: int
    study: int = 0
    # what the row records about how its config was found; a job is its cell, seed and study
    sampler: SamplerChoice | None = field(default=None, compare=False)
    objective: TuningObjective | None = field(default=None, compare=False)

    @property
    def study_key(self) -> str:
        return study_key(self.cell.key, self.study)


@dataclass(frozen=True)
class CellPlan:
    """A cell with what tuning needs: its flat search space and, with `start_from_defaults`, its first trial."""

    cell: Cell
    space: Mapping[str, Dimension]  # flat `train.x` / `method.y` keys
    first_trial: Mapping[str, Any] | None  # the default point queued first, or None (TPE proposes every trial)
    objective: TuningObjective = TuningObjective(metric="val/accuracy", mode="max")


@dataclass(frozen=True)
class Study:
    """One of a cell's `tuning.repeats` independent studies: its own sampler seed, the suite's trial budget."""

    cell_plan: CellPlan
    index: int
    sampler: SamplerChoice

    @property
    def key(self) -> str:
        return study_key(self.cell_plan.cell.key, self.index)

    @property
    def cell(self) -> Cell:
        return self.cell_plan.cell


@dataclass(frozen=True)
class SuitePlan:
    """Everything a suite will run, in suite order."""

    cells: tuple[CellPlan, ...]
    final_seeds: tuple[int, ...]
    seeds: Seeds
    looks: tuple[int, ...] = ()  # seeds per comparison at each look of a sequential final phase
    studies: tuple[Study, ...] = ()  # every cell's studies, cell by cell

    def final_jobs(self) -> list[FinalJob]:
        """Every study's final run for every seed: cell by cell, study by study, seeds in suite order."""
        return self._jobs(self.final_seeds)

    def study(self, key: str) -> Study:
        return next(study for study in self.studies if study.key == key)

    def look_jobs(self, look: int, cells: Collection[str] | None = None) -> list[FinalJob]:
        """The final runs a look (1-based) adds: the seeds between the previous look's count and this one's,
        for every cell at the first look and for `cells` (keys) still inconclusive after it."""
        sizes = self.looks or (len(self.final_seeds),)
        seeds = self.final_seeds[(sizes[look - 2] if look > 1 else 0):sizes[look - 1]]
        return self._jobs(seeds, cells)

    def _jobs(self, seeds: tuple[int, ...], cells: Collection[str] | None = None) -> list[FinalJob]:
        """The final runs of every study (of `cells`, by key, if given) for `seeds`."""
        return [FinalJob(study.cell, seed, study.index, study.sampler, study.cell_plan.objective)
                for study in self.studies if cells is None or study.cell.key in cells for seed in seeds]


def suite_cells(suite: Suite) -> list[Cell]:
    """Every benchmark x protocol x method of the suite, in suite order."""
    return [Cell(b, p, m) for b in suite.benchmarks for p in suite.protocols for m in suite.methods]


def to_tune_space(engine_space: Mapping[str, Dimension], method_space: Mapping[str, Dimension]) -> dict[str, Dimension]:
    """The cell's flat search space: `train.x` for engine dimensions, `method.y` for the method's."""
    from harness.jobs import METHOD_PREFIX, TRAIN_PREFIX

    space = {TRAIN_PREFIX + k: v for k, v in engine_space.items()}
    space.update({METHOD_PREFIX + k: v for k, v in method_space.items()})
    return space


def cell_space(suite: Suite, cell: Cell) -> dict[str, Dimension]:
    """The cell's flat search space: the suite's engine dimensions (`train.x`) and the method's (`method.y`)."""
    return to_tune_space(suite.tuning.engine_space, method_search_space(cell.method))


def cell_spaces(suite: Suite) -> dict[str, dict[str, Dimension]]:
    """Each study's flat search space, by study key (a cell's study 0 has the cell's key; repeats share it)."""
    spaces = {}
    for cell in suite_cells(suite):
        space = cell_space(suite, cell)
        spaces.update({study_key(cell.key, index): space for index in range(suite.tuning.repeats)})
    return spaces


def default_point(cell: Cell, space: Mapping[str, Any]) -> dict[str, Any]:
    """The cell's defaults as a point of its flat search space: the benchmark's `train` settings for
    `train.x`, the method's config (its defaults and the suite's overrides) for `method.y`; a default
    outside its dimension is clipped into it, and a dimension without one (None) is left to the sampler."""
    from harness.jobs import METHOD_PREFIX, TRAIN_PREFIX

    config = build_method(cell.method.name, cell.method.config).config
    point = {}
    for key, dim in space.items():
        if key.startswith(TRAIN_PREFIX):
            value = getattr(cell.tune_benchmark.train, key.removeprefix(TRAIN_PREFIX))
        else:
            value = getattr(config, key.removeprefix(METHOD_PREFIX))
        if value is not None:
            point[key] = clip_to(dim, value)
    return point


def plan_suite(suite: Suite) -> SuitePlan:
    """The suite's plan: its cells with their spaces and first trials, its final seeds, its named seeds."""
    tuning, cells, studies = suite.tuning, [], []
    for cell in suite_cells(suite):
        space = cell_space(suite, cell)
        first = default_point(cell, space) if tuning.start_from_defaults else None
        plan = CellPlan(cell=cell, space=space, first_trial=first, objective=tuning.objective_for(cell.method))
        cells.append(plan)
        studies += [Study(plan, index, SamplerChoice.of(tuning.sampler, tuning.sampler_seed, study_key(cell.key, index),
                                                         index))
                    for index in range(tuning.repeats)]
    return SuitePlan(cells=tuple(cells), final_seeds=suite.final.seed_order, seeds=Seeds.of(suite),
                     looks=suite.final.looks, studies=tuple(studies))
