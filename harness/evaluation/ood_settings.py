"""The OOD family's part of `EvaluationSettings`: which sets the `ood` metric detects, and their size.

Apart from `ood.py` because that module registers the metric (so it imports the metric registry,
which composes `EvaluationSettings` from this class).
"""

from __future__ import annotations

import re

import pydantic
from pydantic import Field

from harness.schema import Strict


class OodSettings(Strict):
    """Settings of the `ood` metric."""


    ood_sets: tuple[str, ...] = Field(
        ("noise_uniform", "noise_gaussian_blobs"),
        min_length=1,
        description="OOD sets the `ood` metric detects, one column group each: the synthetic "
        "noise_uniform and noise_gaussian_blobs, or names whose images the run passes in EvalInputs.ood_sets.",
    )
    ood_synthetic_size: int = Field(
        1000, ge=1, description="Images generated (seeded) for each synthetic OOD set."
    )
    @pydantic.field_validator("ood_sets")
    @classmethod
    def _ood_set_names_fit_in_columns(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(
                    f"OOD set name {name!r} must be lower-case letters, digits and '_' (it names columns)"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"OOD set names must be unique, got {list(names)}")
        return names
