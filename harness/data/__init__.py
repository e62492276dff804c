"""The data layer: dataset registry, sealed test split, tuning splits, scenarios, augmentation and batching.

Importing it registers the built-in datasets and reads no file.
"""

from harness.data.access import (
    PHASE_SPLITS,
    TRAINING_SPLIT,
    DataAccess,
    UnknownSplitError,
    clear_cache,
    dataset_info,
    load_split,
)
from harness.data.augment import BatchAugment
from harness.data.batches import epoch_order, iterate_batches, num_batches
from harness.data.idx import IdxFormatError, read_idx
from harness.data.scenario_spec import (
    ContinualSpec,
    FewDataSpec,
    FewLabelsSpec,
    ImbalanceSpec,
    LabelNoiseSpec,
    ScenarioSpec,
)
from harness.data.scenarios import (
    ScenarioError,
    apply_scenario,
    asymmetric_label_noise,
    class_counts,
    few_data,
    long_tail_counts,
    long_tail_imbalance,
    next_class_mapping,
    symmetric_label_noise,
)
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
    "TRAINING_SPLIT",
    "BatchAugment",
    "ContinualSpec",
    "DataAccess",
    "DatasetInfo",
    "DatasetSource",
    "FewDataSpec",
    "FewLabelsSpec",
    "IdxFormatError",
    "ImbalanceSpec",
    "ImageArrays",
    "LabelNoiseSpec",
    "ScenarioError",
    "ScenarioSpec",
    "UnknownSplitError",
    "apply_scenario",
    "asymmetric_label_noise",
    "class_counts",
    "clear_cache",
    "data_root",
    "dataset_info",
    "epoch_order",
    "few_data",
    "iterate_batches",
    "load_split",
    "long_tail_counts",
    "long_tail_imbalance",
    "next_class_mapping",
    "num_batches",
    "read_idx",
    "sealed_test_split",
    "stratified_split",
    "stratified_subsample",
    "symmetric_label_noise",
    "test_split_sealed",
]
