"""`final.seeds: {min, max, step}`, the schedule of a group-sequential final phase: which seeds run, and at
which look each is added. Only the schedule: the rule that decides whether a comparison goes on to its
next look is `harness.sequential`'s.

Kept apart so the suite schema (`harness.suite`) and the rows (`harness.row_builders`) need no statistics:
every Ray worker imports them, and `harness.sequential` loads scipy.stats (about a second) through the
verdicts it replays.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field, model_validator

from harness.schema import Strict


class SequentialSeeds(Strict):
    """`final.seeds` as a group-sequential plan: seeds 0 .. max - 1, looked at every `step` from `min`."""

    min: int = Field(..., ge=2, description="seeds every comparison gets before its first look")
    max: int = Field(..., ge=2, description="the most seeds a comparison gets")
    step: int | None = Field(None, ge=1, description="seeds added per look (default: min)")

    @model_validator(mode="after")
    def _ordered(self) -> SequentialSeeds:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        return self

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every seed a comparison may get, in the order they are added."""
        return tuple(range(self.max))

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds per comparison at each look: min, min + step, ..., max (the last look is always max)."""
        return look_sizes(self.min, self.max, self.step or self.min)


def look_sizes(first: int, last: int, step: int) -> tuple[int, ...]:
    """min, min + step, ... up to `last`, with `last` itself the final look."""
    sizes = list(range(first, last, step)) + [last]
    return tuple(sorted(set(sizes)))


def look_of(looks: Sequence[int], seed_index: int) -> int:
    """The look (1-based) at which the seed at position `seed_index` of the seed order is added."""
    return next(k for k, size in enumerate(looks, start=1) if seed_index < size)
