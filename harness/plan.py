"""The plan of a suite: the cells it tunes, each cell's search space and default point, the final runs
that follow and the seed of every random choice, as pure functions of the `Suite`.

Nothing here starts Ray or reads the store, so what a suite will run is tested on its own; the runner
only carries the plan out (and skips what the store already holds).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from harness.method import METHODS, MethodInfo, build_method
from harness.protocols import get_protocol
from harness.search_space import Dimension, clip_to
from harness.suite import BenchmarkSpec, MethodEntry, Suite, method_search_space


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
    """One final run: the cell's tuned config retrained with `seed`."""

    cell: Cell
    seed: int


@dataclass(frozen=True)
class CellPlan:
    """A cell with what tuning needs: its flat search space and, with `start_from_defaults`, its first trial."""

    cell: Cell
    space: Mapping[str, Dimension]  # flat `train.x` / `method.y` keys
    first_trial: Mapping[str, Any] | None  # the default point queued first, or None (TPE proposes every trial)


@dataclass(frozen=True)
class SuitePlan:
    """Everything a suite will run, in suite order."""

    cells: tuple[CellPlan, ...]
    final_seeds: tuple[int, ...]
    seeds: Seeds
    looks: tuple[int, ...] = ()  # seeds per comparison at each look of a sequential final phase

    def final_jobs(self) -> list[FinalJob]:
        """Every cell's final run for every seed: cell by cell, seeds in suite order."""
        return [FinalJob(plan.cell, seed) for plan in self.cells for seed in self.final_seeds]

    def look_jobs(self, look: int, cells: Collection[str] | None = None) -> list[FinalJob]:
        """The final runs a look (1-based) adds: the seeds between the previous look's count and this one's,
        for every cell at the first look and for `cells` (keys) still inconclusive after it."""
        sizes = self.looks or (len(self.final_seeds),)
        seeds = self.final_seeds[(sizes[look - 2] if look > 1 else 0):sizes[look - 1]]
        return [FinalJob(plan.cell, seed) for plan in self.cells if cells is None or plan.cell.key in cells
                for seed in seeds]


def suite_cells(suite: Suite) -> list[Cell]:
    """Every benchmark x protocol x method of the suite, in suite order."""
    return [Cell(b, p, m) for b in suite.benchmarks for p in suite.protocols for m in suite.methods]


def cell_space(suite: Suite, cell: Cell) -> dict[str, Dimension]:
    """The cell's flat search space: the suite's engine dimensions (`train.x`) and the method's (`method.y`)."""
    from harness.tuning import to_tune_space

    return to_tune_space(suite.tuning.engine_space, method_search_space(cell.method))


def cell_spaces(suite: Suite) -> dict[str, dict[str, Dimension]]:
    """Each cell's flat search space, by cell key."""
    return {cell.key: cell_space(suite, cell) for cell in suite_cells(suite)}


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
    cells = []
    for cell in suite_cells(suite):
        space = cell_space(suite, cell)
        first = default_point(cell, space) if suite.tuning.start_from_defaults else None
        cells.append(CellPlan(cell=cell, space=space, first_trial=first))
    return SuitePlan(cells=tuple(cells), final_seeds=suite.final.seed_order, seeds=Seeds.of(suite),
                     looks=suite.final.looks)
