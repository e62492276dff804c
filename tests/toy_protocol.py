"""A toy tuning protocol from outside the harness, to show that a new protocol is one class.

`small_holdout` is held-out selection on fewer examples: the same tune_train as `holdout` (so a
tune-phase teacher trained on it never saw the selection split), but each trial is scored on a
class-balanced sample of only `SmallHoldout.val_size` tune_val examples. Running it beside `holdout`
shows how much a small validation set moves the chosen configurations.

Loaded through $HARNESS_PLUGINS (`HARNESS_PLUGINS=tests.toy_protocol`), never shipped in `harness/`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from harness.errors import SuiteError
from harness.protocols import BenchmarkFacts, TuningData, TuningProtocol, register_protocol


@register_protocol
class SmallHoldout(TuningProtocol):
    name = "small_holdout"
    label = "small holdout (64 val examples)"
    summary = "holdout, but each trial is scored on a class-balanced sample of 64 tune_val examples"
    order = 5
    val_size: ClassVar[int] = 64

    def tuning_data(self, bench: BenchmarkFacts, split_seed: int) -> TuningData:
        held_out = super().tuning_data(bench, split_seed)
        return dataclasses.replace(held_out, tune_val_size=self.val_size)

    def check_benchmark(self, bench: BenchmarkFacts, path: str, source: str | None) -> None:
        if bench.tune_val_size is not None and bench.tune_val_size <= self.val_size:
            raise SuiteError(f"{path}.tune_val_size", f"small_holdout scores on {self.val_size} tune_val examples, "
                             f"but this benchmark keeps only {bench.tune_val_size}: it would repeat holdout; raise "
                             "tune_val_size or drop small_holdout", source)
