"""Run settings: one type from a suite's `train:` block to the engine's loop.

`TrainSpec` is what a suite declares for a benchmark (and its teacher): the optimiser family and its
defaults. A field marked `Tunable` is one `tuning.engine_space` may search, so the tunable keys and the
default search space are read from these declarations, never listed elsewhere. `TrainSettings` is a
TrainSpec plus what one run adds: its `Budget`, its seed and the engine-only knobs; the engine reads
nothing else. A trial's tuned values are validated into it like the suite's own values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.data.batches import num_batches
from harness.errors import did_you_mean
from harness.schema import Strict
from harness.search_space import Choice, Dimension, FloatRange


@dataclass(frozen=True)
class Tunable:
    """Marks a `TrainSpec` field as one `tuning.engine_space` may search; `default` is its range in the
    default space (None: searched only where a suite's `engine_space` names it)."""

    default: Dimension | None = None


class Budget(Strict):
    """A training budget: exactly one of `epochs` (may be fractional) or optimiser `steps`."""

    epochs: float | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Budget:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of 'epochs' or 'steps'")
        return self


Switch = Literal["auto", "on", "off"]


class SpeedSpec(Strict):
    """The engine's speed modes (`train.speed`), each `auto`, `on` or `off`; `harness.engine_modes` resolves
    them for the device. `auto` keeps a CPU run's arithmetic exactly as the plain fp32 loop's (every one of
    these modes changes the numbers there), and on CUDA takes bf16 and channels_last (and compile for long
    runs). A mode that is on but cannot run here (bf16 on a CPU without it, a compile that fails) falls back,
    and the row says so."""

    channels_last: Switch = Field("auto", description="NHWC memory format for the model and the batches")
    bf16: Switch = Field("auto", description="bf16 autocast for the training forward (the optimiser stays fp32)")
    compile: Switch = Field("auto", description="torch.compile the training forward (eager if it fails)")

    @field_validator("channels_last", "bf16", "compile", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML reads a bare `on` / `off` as true / false
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class TrainSpec(Strict):
    """Optimiser family and defaults; `lr` and `weight_decay` are tuned unless the space omits them."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: Annotated[float, Tunable(FloatRange(low=0.01, high=0.3, log=True))] = Field(0.05, gt=0)
    weight_decay: Annotated[float, Tunable(FloatRange(low=1e-5, high=2e-3, log=True))] = Field(5e-4, ge=0)
    momentum: Annotated[float, Tunable()] = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(256, gt=0, description="global batch; each of W workers takes batch_size // W")
    warmup_fraction: Annotated[float, Tunable()] = Field(
        0.05, ge=0, lt=1, description="of the total steps: linear warm-up before the cosine decay")
    schedule: Literal["stream", "per_task"] = Field(
        "stream", description="on a task stream (continual), one warm-up and cosine over the whole stream, or "
        "one per task, each task's share of the steps (as continual-learning codebases reset it per task); "
        "the same on a single training split")
    speed: SpeedSpec = SpeedSpec()

    @model_serializer(mode="wrap")
    def _omit_defaults_added_later(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # suites that set no speed mode or schedule keep the hashes (and result directories) they had before
        data = handler(self)
        if self.speed == SpeedSpec():
            data.pop("speed", None)
        if self.schedule == "stream":
            data.pop("schedule", None)
        return data

    @classmethod
    def tunable(cls) -> dict[str, Tunable]:
        """The fields `tuning.engine_space` may search, in declaration order."""
        return {name: marker for name, info in cls.model_fields.items()
                for marker in info.metadata if isinstance(marker, Tunable)}

    @classmethod
    def default_space(cls) -> dict[str, Dimension]:
        """The engine search space of a suite that declares none: each tunable field's default range."""
        return {name: marker.default for name, marker in cls.tunable().items() if marker.default is not None}

    @classmethod
    def check_searchable(cls, key: str, dimension: Dimension) -> None:
        """Raise ValueError unless `key` is tunable and the ends (or choices) of `dimension` are valid values
        for it, so a bad range fails when the suite is read rather than inside a trial."""
        tunable = list(cls.tunable())
        if key not in tunable:
            raise ValueError(f"cannot tune '{key}';{did_you_mean(key, tunable)} tunable: {', '.join(sorted(tunable))}")
        for value in dimension.choices if isinstance(dimension, Choice) else (dimension.low, dimension.high):
            try:
                cls.model_validate({key: value})
            except ValidationError as error:
                raise ValueError(f"'{key}' cannot be {value!r}: {error.errors()[0]['msg']}") from None


class TrainSettings(Budget, TrainSpec):
    """Everything the loop needs besides the model, method and data: a `TrainSpec`, a `Budget` and a seed."""

    nesterov: bool = True
    seed: int = 0
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm (None: no clipping)")

    @classmethod
    def for_run(cls, spec: TrainSpec, budget: Budget, seed: int, tuned: Mapping[str, Any] = ()) -> TrainSettings:
        """One run's settings: the spec's values with the trial's `tuned` ones over them, the budget, the seed."""
        return cls.model_validate({**spec.model_dump(), **dict(tuned), **budget.model_dump(), "seed": seed})

    def replace(self, **changes: Any) -> TrainSettings:
        """A copy with `changes`, validated like the original (a method's regime: `Method.adjust_settings`)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def total_steps(self, num_samples: int, world_size: int = 1) -> int:
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None  # a Budget has one of them
        per_epoch = num_batches(num_samples, self.batch_size // world_size, drop_last=True, world_size=world_size)
        return max(1, math.ceil(self.epochs * per_epoch))
