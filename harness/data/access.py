"""The only ways to get data: `load_split` (cached raw splits) and `DataAccess` (a run's handle).

A handle given `SplitHandles` (`harness.data.shared`: the splits the driver put in Ray's object store)
maps its raw splits from there instead of reading files; the splits it hands out are the same bytes.

A tuning-phase handle can reach only `tune_train` and `tune_val`, carved out of the train split,
so nothing a tuner does can see the test set; a final-phase handle gets `train` and `test`.
Each handle records which splits it handed out, so a run's record can prove it. The `oracle` phase,
which exists only for the oracle protocol (`harness.protocols.Oracle`: how much tuning on the test set
inflates results), pairs tune_train with a class-balanced sample of the test split as large as tune_val.
Which phase and splits a protocol's tuning trials use is the protocol's to say (`TuningData`).

A benchmark's scenario (label noise, imbalance, few data) changes only the phase's training split,
`tune_train` or `train`; `tune_val` and `test` are never touched, so held-out data stays clean and
balanced and scores stay comparable across scenarios.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch

from harness.data.scenario_spec import ScenarioSpec
from harness.data.scenarios import apply_scenario
from harness.data.shared import SplitHandles
from harness.data.sources import DATASETS, SPLITS, DatasetInfo, ImageArrays, Split, refuse_if_sealed
from harness.data.splits import stratified_split, stratified_subsample
from harness.errors import HarnessInputError, SealedSplitError

Phase = Literal["tune", "oracle", "final"]
PHASE_SPLITS: dict[str, tuple[str, ...]] = {"tune": ("tune_train", "tune_val"), "oracle": ("tune_train", "test"),
                                            "final": ("train", "test", "calibration")}
# the only split a scenario changes
TRAINING_SPLIT: dict[str, str] = {"tune": "tune_train", "oracle": "tune_train", "final": "train"}
# the phases that train on a carve of the train split (tune_train), as tuning trials do
TUNING_PHASES = frozenset(phase for phase, split in TRAINING_SPLIT.items() if split == "tune_train")

_train_cache: dict[str, ImageArrays] = {}  # train splits by dataset; a test split is never kept


class UnknownSplitError(HarnessInputError, ValueError):
    """A split name that the handle's phase does not have."""


def load_split(name: str, split: Split) -> ImageArrays:
    """A dataset's raw train or test split; the train split is read once per process.

    The seal is checked first. A test split is read afresh each time and never cached: no copy of it
    lingers in a process for a later trial (an honest one after an oracle one in a reused actor) to
    find. Treat the result as read-only: a train split is shared by every caller.
    """
    refuse_if_sealed(name, split)
    if split not in SPLITS:
        raise UnknownSplitError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    if split == "test":
        return DATASETS.get(name).load(split)
    if name not in _train_cache:
        _train_cache[name] = DATASETS.get(name).load(split)
    return _train_cache[name]


def clear_cache() -> None:
    """Forget every cached split (tests that change HARNESS_DATA_DIR; freeing memory between studies)."""
    _train_cache.clear()


def dataset_info(name: str) -> DatasetInfo:
    """The static facts of a registered dataset, without reading any file."""
    return DATASETS.get(name).info


class DataAccess:
    """The handle a run gets on data: `tune_train`/`tune_val` when tuning, `train`/`test` in the final phase."""

    def __init__(
        self,
        dataset: str,
        phase: Phase,
        *,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        tune_train_size: int | None = None,
        tune_val_size: int | None = None,
        scenario: ScenarioSpec | None = None,
        calibration_size: int = 0,
        shared: SplitHandles | None = None,
    ) -> None:
        if phase not in PHASE_SPLITS:
            raise HarnessInputError(f"unknown phase '{phase}'; valid: {', '.join(PHASE_SPLITS)}")
        if not 0.0 < val_fraction < 1.0:
            raise HarnessInputError(f"val_fraction must be in (0, 1), got {val_fraction}")
        for label, size in (("tune_train_size", tune_train_size), ("tune_val_size", tune_val_size)):
            if size is not None and size <= 0:
                raise HarnessInputError(f"{label} must be positive, got {size}")
        self.dataset = dataset
        self.phase: str = phase
        self.info: DatasetInfo = dataset_info(dataset)
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.sizes = {"tune_train": tune_train_size, "tune_val": tune_val_size}
        self.scenario = scenario
        self.calibration_size = calibration_size
        self.shared = shared  # the object-store splits to map; None (or a split it lacks): read the files
        self._calibration: ImageArrays | None = None
        self._tune_splits: dict[str, ImageArrays] | None = None
        self._final_train: ImageArrays | None = None
        self._scenario_record: dict[str, Any] = {}
        self._read: set[str] = set()

    @property
    def splits_read(self) -> tuple[str, ...]:
        """Sorted names of the splits this handle has handed out."""
        return tuple(sorted(self._read))

    def split(self, name: str) -> ImageArrays:
        """The named split of this phase; asking a tuning handle for `train` or `test` raises."""
        valid = PHASE_SPLITS[self.phase]
        if name not in valid:
            if self.phase == "tune" and name in PHASE_SPLITS["final"]:
                raise SealedSplitError(
                    f"the '{name}' split of '{self.dataset}' is sealed during tuning: "
                    f"tuning code may read only {' and '.join(valid)}"
                )
            raise UnknownSplitError(
                f"unknown split '{name}' in the {self.phase} phase; valid: {', '.join(valid)}"
            )
        if self.phase == "oracle" and name == "test":
            arrays = self._oracle_test_split()
        elif self.phase in TUNING_PHASES:
            arrays = self._tune_split(name)
        elif name == "train":
            arrays = self._final_train_split()
        elif name == "calibration":
            self._final_train_split()
            if self._calibration is None:
                raise UnknownSplitError("no calibration split: set the benchmark's evaluation.calibration_size")
            arrays = self._calibration
        else:
            arrays = self._raw("test")
        self._read.add(name)
        return arrays

    @property
    def scenario_record(self) -> dict[str, Any]:
        """What the scenario did to the training split (JSON-able); {} when the benchmark has none.

        Keys: split, seed, steps (in the order applied), size_before/size_after, class_counts_before/
        class_counts, and one sub-record per step (see `harness.data.scenarios`). Computing it prepares
        the training split but does not count as reading it.
        """
        if self.scenario is not None and not self._scenario_record:
            if self.phase in TUNING_PHASES:
                self._tune_split("tune_train")
            else:
                self._final_train_split()
        return copy.deepcopy(self._scenario_record)  # callers may add row fields without changing ours

    def _with_scenario(self, arrays: ImageArrays) -> ImageArrays:
        """The training split after the benchmark's scenario; the input (maybe the shared cache) is untouched."""
        if self.scenario is None:
            return arrays
        changed, record = apply_scenario(arrays, self.scenario, self.info.num_classes)
        self._scenario_record = {"split": TRAINING_SPLIT[self.phase], **record}
        return changed

    def _raw(self, split: Split) -> ImageArrays:
        """A raw split of this handle's dataset: mapped from the object store when shared, else from the files.
        Read-only either way (the file-read train split is the process's shared cache)."""
        mapped = self.shared.fetch(self.dataset, split) if self.shared is not None else None
        return mapped if mapped is not None else load_split(self.dataset, split)

    def _final_train_split(self) -> ImageArrays:
        """The final training split: train minus the calibration hold-out (if any), then the scenario."""
        if self._final_train is None:
            train = self._raw("train")
            if self.calibration_size:
                if self.calibration_size >= len(train):
                    raise HarnessInputError(f"calibration_size {self.calibration_size} leaves nothing to train on: "
                                            f"'{self.dataset}' has {len(train)} training examples")
                held = stratified_subsample(train.labels, self.calibration_size, self.split_seed * 1000 + 4)
                keep = torch.ones(len(train), dtype=torch.bool)
                keep[held] = False
                self._calibration = train.subset(held)
                train = train.subset(torch.nonzero(keep).squeeze(1))
            self._final_train = self._with_scenario(train)
        return self._final_train

    def _tune_split(self, name: str) -> ImageArrays:
        """Stratified val_fraction of each class to tune_val; optional caps keep class balance; then the
        scenario, on tune_train only."""
        if self._tune_splits is None:
            train = self._raw("train")
            rest, held = stratified_split(train.labels, self.val_fraction, self.split_seed)
            splits = {"tune_train": train.subset(rest), "tune_val": train.subset(held)}
            # distinct derived seeds so the two caps do not pick correlated positions
            for offset, (key, size) in enumerate(self.sizes.items(), start=1):
                if size is not None and size < len(splits[key]):
                    keep = stratified_subsample(splits[key].labels, size, self.split_seed * 1000 + offset)
                    splits[key] = splits[key].subset(keep)
            # after the carve and the caps, so tune_val stays clean and the cap counts clean examples
            splits["tune_train"] = self._with_scenario(splits["tune_train"])
            self._tune_splits = splits
        return self._tune_splits[name]

    def _oracle_test_split(self) -> ImageArrays:
        """The test split, capped like tune_val, so oracle and holdout select on equally many examples."""
        test = self._raw("test")
        size = self.sizes["tune_val"]
        if size is None:
            size = len(self._tune_split("tune_val"))
        if size < len(test):
            test = test.subset(stratified_subsample(test.labels, size, self.split_seed * 1000 + 3))
        return test

    def __repr__(self) -> str:
        return f"DataAccess({self.dataset!r}, phase={self.phase!r}, splits_read={self.splits_read})"
