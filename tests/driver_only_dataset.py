"""A dataset whose files only the suite's driver can read, for the two-node test of shared splits.

`driver_digits` is scikit-learn's digits under another name. Its source refuses, as a node without
the data files would, in every process whose environment lacks `DRIVER_ENV`, which the test sets
for the driver alone: Ray workers get the node's environment plus what `harness.cluster.worker_env`
forwards, which is not this variable. A suite on it completes only if every tuning trial and final run
maps its splits from Ray's object store. Loaded through $HARNESS_PLUGINS, never shipped in `harness/`.
"""

from __future__ import annotations

import dataclasses
import os

from harness.data import DATASETS
from harness.data.sources import DigitsSource, ImageArrays, Split
from harness.errors import DataUnavailableError
from tests.driver_env import DRIVER_ENV


class DriverOnlyDigits(DigitsSource):
    info = dataclasses.replace(DigitsSource.info, name="driver_digits")

    def check_available(self) -> None:
        if os.environ.get(DRIVER_ENV) != "1":
            raise DataUnavailableError(f"dataset 'driver_digits' has no files in this process ({os.getpid()}): "
                                       f"only the driver (with {DRIVER_ENV}=1) can read them")
        super().check_available()

    def load(self, split: Split) -> ImageArrays:
        self.check_available()
        return super().load(split)


DATASET = DriverOnlyDigits()
DATASETS.add("driver_digits", DATASET)
