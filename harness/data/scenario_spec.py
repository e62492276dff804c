"""A benchmark's scenario as a suite declares it: which changes the training split gets.

The data layer owns it: `harness.data.scenarios` applies it, `DataAccess` hands the changed split out,
and `harness.suite` only composes it into a benchmark (`benchmarks[i].scenario`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from harness.schema import Strict


class LabelNoiseSpec(Strict):
    """`rate` of each class's training labels replaced: `symmetric` by a uniformly drawn other class,
    `asymmetric` by a fixed other class (`mapping`, default c -> c+1 mod K)."""

    kind: Literal["symmetric", "asymmetric"]
    rate: float = Field(ge=0, le=1)
    mapping: dict[int, int] | None = Field(None, description="asymmetric only: class -> the class it flips to")

    @field_validator("mapping")
    @classmethod
    def _real_flips(cls, mapping: dict[int, int] | None) -> dict[int, int] | None:
        for source, target in (mapping or {}).items():
            if source < 0 or target < 0:
                raise ValueError(f"classes are numbered from 0, got {source}: {target}")
            if source == target:
                raise ValueError(f"class {source} maps to itself; a flip must change the class")
        return mapping

    @model_validator(mode="after")
    def _mapping_is_asymmetric(self) -> LabelNoiseSpec:
        if self.mapping is not None and self.kind != "asymmetric":
            raise ValueError("'mapping' needs kind 'asymmetric' (symmetric noise draws the new class uniformly)")
        return self


class ImbalanceSpec(Strict):
    """A long tail: n_c = n_max * ratio^(-c/(K-1)) examples of class c (Cao et al. 2019), class 0 the head."""

    ratio: float = Field(ge=1, description="n_max / n_min; 1 is balanced")


class FewDataSpec(Strict):
    """The low-data regime: exactly `n_per_class` training examples of every class."""

    n_per_class: int = Field(gt=0)


class FewLabelsSpec(Strict):
    """Semi-supervised: every training image stays, but only `n_per_class` of each class keep their label."""

    n_per_class: int = Field(gt=0)


class ContinualSpec(Strict):
    """Class-incremental learning: the training split is cut into `tasks` tasks of consecutive classes,
    trained one after another; rows gain average accuracy and forgetting (`harness.evaluation.continual`)."""

    tasks: int = Field(ge=2)


class ScenarioSpec(Strict):
    """Changes to the training split only (tune_train, train); tune_val and test stay clean and balanced,
    so scores remain comparable. Applied in the order few_data, imbalance, label_noise, few_labels, then
    cut into a task stream if `continual`; `seed` makes tune and final runs of every method see the same data."""

    seed: int = 0
    few_data: FewDataSpec | None = None
    imbalance: ImbalanceSpec | None = None
    label_noise: LabelNoiseSpec | None = None
    few_labels: FewLabelsSpec | None = None
    continual: ContinualSpec | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> ScenarioSpec:
        if not self.model_dump(exclude={"seed"}, exclude_none=True):
            raise ValueError("give at least one of 'few_data', 'imbalance', 'label_noise', 'few_labels', "
                             "'continual' (or drop 'scenario')")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_steps(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # scenarios written before few_labels / continual existed keep their hashes
        data = handler(self)
        for optional in ("few_labels", "continual"):
            if getattr(self, optional) is None:
                data.pop(optional, None)
        return data
