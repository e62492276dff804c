"""The tiny search-space vocabulary suites and methods use: `{low, high, log}` and `{choices}`.

Translated to Ray Tune in exactly one place (`harness.tuning`); everything else sees only these types.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FloatRange(BaseModel):
    """A float sampled in [low, high], log-uniformly when `log`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class IntRange(BaseModel):
    """An integer sampled in [low, high] inclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    low: int
    high: int
    integer: bool = Field(True, description="marks the range as integer-valued")
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class Choice(BaseModel):
    """One of a fixed list of values."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    choices: tuple[Any, ...] = Field(min_length=1)


Dimension = IntRange | FloatRange | Choice


def clip_to(dim: Dimension, value: Any) -> Any:
    """`value` made a point of `dim`: a range's nearest bound if outside it, a choice's first if not among them."""
    if isinstance(dim, Choice):
        return value if value in dim.choices else dim.choices[0]
    clipped = min(max(value, dim.low), dim.high)
    return int(round(clipped)) if isinstance(dim, IntRange) else float(clipped)


def parse_dimension(raw: Any) -> Dimension:
    """Read a YAML mapping into a dimension; raises ValueError with a hint on any other shape."""
    if isinstance(raw, IntRange | FloatRange | Choice):
        return raw
    if not isinstance(raw, dict):
        raise ValueError("a search dimension is a mapping: {low, high, log} or {choices: [...]}")
    if "choices" in raw:
        return Choice(**raw)
    if raw.get("integer"):
        return IntRange(**raw)
    return FloatRange(**raw)
