"""Tuning protocols: how a method's hyper-parameters are chosen, one class per protocol.

A protocol says which data its tuning trials read (the dataset, the split a trial trains on and the
split that scores it), whether its scores are honest (chosen without looking at the test split), how
readers see it named, and what a suite must declare to run it. Result rows store only its name;
everything else is read from here. DomainBed's `model_selection.py` is the pattern: one class per
selection method, the oracle named as such.

A new protocol is one class registered with `@register_protocol`, here or in a plugin module
(`$HARNESS_PLUGINS`, see `harness.plugins`); a suite names it in `protocols:`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import ClassVar

from harness.errors import SuiteError, UnknownNameError
from harness.plugins import discover_methods
from harness.registry import Registry


class BenchmarkFacts(typing.Protocol):
    """What a protocol reads of a benchmark (`harness.suite.BenchmarkSpec` has it; this module cannot
    import the suite, which imports it)."""

    @property
    def dataset(self) -> str: ...
    @property
    def tune_dataset(self) -> str | None: ...
    @property
    def val_fraction(self) -> float: ...
    @property
    def tune_train_size(self) -> int | None: ...
    @property
    def tune_val_size(self) -> int | None: ...


class SuiteFacts(typing.Protocol):
    """What a protocol's checks read of a suite (`harness.suite.Suite` has it)."""

    @property
    def protocols(self) -> Sequence[str]: ...
    @property
    def allow_oracle(self) -> bool: ...
    @property
    def benchmarks(self) -> Sequence[BenchmarkFacts]: ...


@dataclasses.dataclass(frozen=True)
class TuningData:
    """What one benchmark's tuning trials read: the `harness.data.DataAccess` handle's arguments and the
    two splits taken from it, `train_split` to train on and `score_split` to score every epoch."""

    dataset: str
    phase: str  # the handle's phase: "tune" (tune_train and tune_val) or "oracle" (tune_train and test)
    train_split: str
    score_split: str
    val_fraction: float
    split_seed: int
    tune_train_size: int | None
    tune_val_size: int | None


class TuningProtocol:
    """The held-out protocol's behaviour; a subclass overrides what its protocol changes."""

    name: ClassVar[str]
    label: ClassVar[str]  # how readers see it named (tables, dashboards, the console)
    summary: ClassVar[str]
    honest: ClassVar[bool] = True  # chosen without the test split: its scores are results, not bounds
    caveat: ClassVar[str] = ""  # shown under its heading on the dashboard (a dishonest protocol says why)
    order: ClassVar[int] = 50  # where it is listed among protocols; dishonest ones always come last
    data_phase: ClassVar[str] = "tune"
    tuning_splits: ClassVar[tuple[str, str]] = ("tune_train", "tune_val")  # (trains on, scores on)
    uses_tune_dataset: ClassVar[bool] = False  # reads a benchmark's `tune_dataset`

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.honest and "test" in cls.tuning_splits:
            raise TypeError(f"protocol {cls.__name__} reads the test split while tuning, so it cannot be honest: "
                            "set honest = False (readers then see it flagged) or tune on other splits")

    @property
    def seals_test(self) -> bool:
        """Whether its tuning trials run inside `sealed_test_split()`: always, unless it scores on test."""
        return "test" not in self.tuning_splits

    def tuning_dataset(self, bench: BenchmarkFacts) -> str:
        """The dataset its tuning reads; final runs always train and test on `bench.dataset`."""
        return bench.dataset

    def tuning_data(self, bench: BenchmarkFacts, split_seed: int) -> TuningData:
        """What a tuning trial of `bench` (as `harness.plan.Cell.tune_benchmark` gives it) reads."""
        train_split, score_split = self.tuning_splits
        return TuningData(dataset=bench.dataset, phase=self.data_phase, train_split=train_split,
                          score_split=score_split, val_fraction=bench.val_fraction, split_seed=split_seed,
                          tune_train_size=bench.tune_train_size, tune_val_size=bench.tune_val_size)

    def check_suite(self, suite: SuiteFacts, path: str, source: str | None) -> None:
        """Raise `SuiteError` at `path` (its `protocols[i]`) when the suite cannot run this protocol."""

    def check_benchmark(self, bench: BenchmarkFacts, path: str, source: str | None) -> None:
        """Raise `SuiteError` under `path` (`benchmarks[i]`) when this benchmark cannot be tuned this way."""


PROTOCOLS: Registry[TuningProtocol] = Registry("protocol")
ProtocolClass = typing.TypeVar("ProtocolClass", bound=type[TuningProtocol])


def register_protocol(cls: ProtocolClass) -> ProtocolClass:
    """Class decorator: register one instance of a TuningProtocol subclass under `cls.name`."""
    PROTOCOLS.add(cls.name, cls())
    return cls


def get_protocol(name: str) -> TuningProtocol:
    """The registered protocol called `name`, plugins included (a fresh Ray worker imports them here)."""
    discover_methods()
    return PROTOCOLS.get(name)


@register_protocol
class Holdout(TuningProtocol):
    name = "holdout"
    label = "holdout"
    summary = "tune on tune_train / tune_val, a seeded stratified split of train; the test split is sealed"
    order = 0


@register_protocol
class CrossDataset(TuningProtocol):
    name = "cross_dataset"
    label = "cross_dataset"
    summary = "tune on each benchmark's tune_dataset (the same task shape), retrain and test on its dataset"
    order = 10
    uses_tune_dataset = True

    def tuning_dataset(self, bench: BenchmarkFacts) -> str:
        return bench.tune_dataset or bench.dataset

    def check_benchmark(self, bench: BenchmarkFacts, path: str, source: str | None) -> None:
        """A tune_dataset is named, registered, not the dataset itself, and of the same task shape."""
        # here, not at the top: harness.data loads torch, and the leaderboard and dashboards import this module
        from harness.data import DATASETS

        path = f"{path}.tune_dataset"
        if bench.tune_dataset is None:
            raise SuiteError(path, "the cross_dataset protocol tunes on another dataset: name it here "
                             f"(valid: {', '.join(DATASETS.names())})", source)
        if bench.tune_dataset not in DATASETS:
            raise SuiteError(path, str(UnknownNameError("dataset", bench.tune_dataset, DATASETS.names())), source)
        if bench.tune_dataset == bench.dataset:
            raise SuiteError(path, f"tune_dataset must differ from dataset ('{bench.dataset}')", source)
        target, tuned = DATASETS.get(bench.dataset).info, DATASETS.get(bench.tune_dataset).info
        shape = ("channels", "num_classes", "image_size")
        if any(getattr(target, a) != getattr(tuned, a) for a in shape):
            described = ", ".join(f"{a} {getattr(tuned, a)} vs {getattr(target, a)}" for a in shape)
            raise SuiteError(path, f"'{bench.tune_dataset}' is not the same task shape as '{bench.dataset}' "
                             f"({described})", source)


@register_protocol
class Oracle(TuningProtocol):
    """Tuned against the test split (a class-balanced sample as large as tune_val): it exists to measure
    how much that common practice inflates results, and is flagged wherever it appears."""

    name = "oracle"
    label = "oracle (tuned on test)"
    summary = "tune on the test split (needs allow_oracle), to measure what that inflates"
    honest = False
    caveat = ("Hyper-parameters were chosen on the test split: an optimistic bound on what tuning can reach, "
            "not a held-out result.")
    order = 90
    data_phase = "oracle"
    tuning_splits = ("tune_train", "test")

    def check_suite(self, suite: SuiteFacts, path: str, source: str | None) -> None:
        if not suite.allow_oracle:
            raise SuiteError(path, "the oracle protocol tunes on the test split, so its scores are inflated by "
                             "design; set allow_oracle: true to run it anyway (its rows and results are labelled "
                             "oracle everywhere)", source)


# rows written before protocols existed were all tuned on a held-out split; claims are judged under it
DEFAULT_PROTOCOL = Holdout.name


def check_suite_protocols(suite: SuiteFacts, source: str | None) -> None:
    """Every protocol's suite-level checks, in suite order (the names were validated by the schema)."""
    for index, name in enumerate(suite.protocols):
        PROTOCOLS.get(name).check_suite(suite, f"protocols[{index}]", source)


def check_benchmark_protocols(suite: SuiteFacts, index: int, bench: BenchmarkFacts, source: str | None) -> None:
    """Every protocol's checks of benchmark `index`, and that a `tune_dataset` has a protocol that reads it."""
    path = f"benchmarks[{index}]"
    for name in suite.protocols:
        PROTOCOLS.get(name).check_benchmark(bench, path, source)
    if bench.tune_dataset is not None and not any(PROTOCOLS.get(p).uses_tune_dataset for p in suite.protocols):
        readers = " or ".join(name for name in PROTOCOLS if PROTOCOLS.get(name).uses_tune_dataset)
        raise SuiteError(f"{path}.tune_dataset", f"only the {readers} protocol uses a tune_dataset; add it to "
                         "`protocols`", source)


def known_protocol(name: str) -> str:
    """Schema validator of a `protocols:` entry (a ValueError, so the error carries its path `protocols[i]`)."""
    if name not in PROTOCOLS:
        raise ValueError(str(UnknownNameError("protocol", name, PROTOCOLS.names())))
    return name


# ---------------------------------------------------------------- how results name and order protocols
# Rows may name a protocol whose plugin this process has not imported: it is shown by its name, after
# the registered ones.


def protocol_label(protocol: object) -> str:
    """How a protocol is named to readers: oracle results must never pass for held-out ones."""
    name = str(protocol)
    return PROTOCOLS.get(name).label if name in PROTOCOLS else name


def protocol_caveat(protocol: object) -> str:
    """What readers must know about a protocol's results ("" for most; the oracle says they are a bound)."""
    name = str(protocol)
    return PROTOCOLS.get(name).caveat if name in PROTOCOLS else ""


def is_honest(protocol: object) -> bool | None:
    """Whether a protocol chose its configs without the test split; None for a name this process has not
    registered (a plugin not loaded): readers must neither flag nor vouch for it, so each asks its own
    question (`vouched_honest`, `must_not_read_test`)."""
    name = str(protocol)
    return PROTOCOLS.get(name).honest if name in PROTOCOLS else None


def vouched_honest(protocol: object) -> bool:
    """Shown as a held-out result only when a registered protocol says so: an unknown one is flagged."""
    return is_honest(protocol) is True


def must_not_read_test(protocol: object) -> bool:
    """A tuning row that must not have read test: every protocol but a registered dishonest one."""
    return is_honest(protocol) is not False


def protocol_sort_key(protocol: object) -> tuple[int, int, int, str]:
    """Registered protocols first (honest ones, by `order`: holdout first; dishonest ones last), then
    unregistered names, by name."""
    name = str(protocol)
    if name not in PROTOCOLS:
        return (1, 0, 0, name)
    known = PROTOCOLS.get(name)
    return (0, 0 if known.honest else 1, known.order, name)
