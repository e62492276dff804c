"""The data layer: dataset registry, sealed test split, tuning splits, augmentation and batching.

Importing it registers the built-in datasets and reads no file.
"""

from harness.data.access import (
    PHASE_SPLITS,
    DataAccess,
    UnknownSplitError,
    clear_cache,
    dataset_info,
    load_split,
)
from harness.data.augment import BatchAugment
from harness.data.batches import epoch_order, iterate_batches, num_batches
from harness.data.idx import IdxFormatError, read_idx
from harness.data.sources import (
    DATASETS,
    DatasetInfo,
    DatasetSource,
    ImageArrays,
    data_root,
    sealed_test_split,
    test_split_sealed,
)
from harness.data.splits import stratified_split, stratified_subsample

__all__ = [
    "DATASETS",
    "PHASE_SPLITS",
    "BatchAugment",
    "DataAccess",
    "DatasetInfo",
    "DatasetSource",
    "IdxFormatError",
    "ImageArrays",
    "UnknownSplitError",
    "clear_cache",
    "data_root",
    "dataset_info",
    "epoch_order",
    "iterate_batches",
    "load_split",
    "num_batches",
    "read_idx",
    "sealed_test_split",
    "stratified_split",
    "stratified_subsample",
    "test_split_sealed",
]
