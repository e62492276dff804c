"""The only ways to get data: `load_split` (cached raw splits) and `DataAccess` (a run's handle).

A tuning-phase handle can reach only `tune_train` and `tune_val`, carved out of the train split,
so nothing a tuner does can see the test set; a final-phase handle gets `train` and `test`.
Each handle records which splits it handed out, so a run's record can prove it.
"""

from __future__ import annotations

from typing import Literal

from harness.data.sources import DATASETS, SPLITS, DatasetInfo, ImageArrays, Split, refuse_if_sealed
from harness.data.splits import stratified_split, stratified_subsample
from harness.errors import HarnessInputError, SealedSplitError

Phase = Literal["tune", "final"]
PHASE_SPLITS: dict[str, tuple[str, ...]] = {"tune": ("tune_train", "tune_val"), "final": ("train", "test")}

_cache: dict[tuple[str, str], ImageArrays] = {}


class UnknownSplitError(HarnessInputError, ValueError):
    """A split name that the handle's phase does not have."""


def load_split(name: str, split: Split) -> ImageArrays:
    """A dataset's raw train or test split, read once per process.

    The seal is checked before the cache, so a test split cached by an earlier final run is still
    refused to tuning code. Treat the result as read-only: it is shared by every caller.
    """
    refuse_if_sealed(name, split)
    if split not in SPLITS:
        raise UnknownSplitError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    key = (name, split)
    if key not in _cache:
        _cache[key] = DATASETS.get(name).load(split)
    return _cache[key]


def clear_cache() -> None:
    """Forget every cached split (tests that change HARNESS_DATA_DIR; freeing memory between studies)."""
    _cache.clear()


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
        self._tune_splits: dict[str, ImageArrays] | None = None
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
        if self.phase == "tune":
            arrays = self._tune_split(name)
        else:
            arrays = load_split(self.dataset, "train" if name == "train" else "test")
        self._read.add(name)
        return arrays

    def _tune_split(self, name: str) -> ImageArrays:
        """Stratified val_fraction of each class to tune_val; optional caps keep class balance."""
        if self._tune_splits is None:
            train = load_split(self.dataset, "train")
            rest, held = stratified_split(train.labels, self.val_fraction, self.split_seed)
            splits = {"tune_train": train.subset(rest), "tune_val": train.subset(held)}
            # distinct derived seeds so the two caps do not pick correlated positions
            for offset, (key, size) in enumerate(self.sizes.items(), start=1):
                if size is not None and size < len(splits[key]):
                    keep = stratified_subsample(splits[key].labels, size, self.split_seed * 1000 + offset)
                    splits[key] = splits[key].subset(keep)
            self._tune_splits = splits
        return self._tune_splits[name]

    def __repr__(self) -> str:
        return f"DataAccess({self.dataset!r}, phase={self.phase!r}, splits_read={self.splits_read})"
