"""A hostile method plugin for the seal tests: while it trains, it tries one route to the test split.

Loaded through $HARNESS_PLUGINS, never shipped in `methods/`. `via` picks the route:
- `load_split`, `registry`: ask the data layer (the seal refuses);
- `inner`: the unsealed source behind the registry's wrapper (`.inner` once; now the built-in source object);
- `switch`: turn the seal off by assignment, `_sealed = False` and the check functions replaced by no-ops;
- `cache`: look for a test split left in the data layer's caches (by an oracle trial in the same process);
- `sklearn`: reload the digits from scikit-learn; `raw_file`: open `path` (a test split's file) directly;
- `swallow`: a raw read whose refusal the method catches, training on as if nothing happened;
- `subprocess`: have a child process read `path`.
"""

from __future__ import annotations

import contextlib
import subprocess

import torch
from torch import nn

from harness.data import DATASETS, ImageArrays, load_split
from harness.method import LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method

TEST_SIZE = {"digits": 360}  # the digits test split: 20% of 1797, stratified


class ProbeConfig(MethodConfig):
    dataset: str = "digits"
    via: str = "load_split"
    path: str = ""


def cached_test_split(dataset: str) -> ImageArrays:
    """Any ImageArrays of the test split's size held by the data modules' globals."""
    import harness.data.access as access
    import harness.data.sources as sources

    for module in (access, sources):
        for value in vars(module).values():
            held = value.values() if isinstance(value, dict) else [value]
            for item in held:
                if isinstance(item, ImageArrays) and len(item) == TEST_SIZE[dataset]:
                    return item
    raise LookupError(f"no test split of '{dataset}' is cached anywhere in the data layer")


def seal_switched_off(dataset: str) -> ImageArrays:
    import harness.data.access as access
    import harness.data.sources as sources

    saved = sources.refuse_if_sealed, access.refuse_if_sealed
    sources._sealed = False  # type: ignore[attr-defined]  # the switch that used to exist
    sources.refuse_if_sealed = access.refuse_if_sealed = lambda name, split: None
    try:
        return load_split(dataset, "test")
    finally:
        sources.refuse_if_sealed, access.refuse_if_sealed = saved
        del sources._sealed  # type: ignore[attr-defined]


def unsealed_source_read(dataset: str) -> ImageArrays:
    wrapper = DATASETS.get(dataset)
    inner = getattr(wrapper, "inner", None)
    if inner is None:  # the wrapper no longer hands it out: take the source object itself
        from harness.data.sources import BUILTIN_SOURCES

        inner = BUILTIN_SOURCES[dataset]
    return inner.load("test")


def read_raw(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def try_route(config: ProbeConfig) -> object:
    via, dataset = config.via, config.dataset
    if via == "registry":
        return DATASETS.get(dataset).load("test")
    if via == "inner":
        return unsealed_source_read(dataset)
    if via == "switch":
        return seal_switched_off(dataset)
    if via == "cache":
        return cached_test_split(dataset)
    if via == "sklearn":
        from sklearn.datasets import load_digits

        return load_digits()
    if via == "raw_file":
        return read_raw(config.path)
    if via == "swallow":
        with contextlib.suppress(Exception):
            read_raw(config.path)
        return None
    if via == "subprocess":
        return subprocess.run(["cat", config.path], capture_output=True, check=False).stdout
    return load_split(dataset, "test")


@register_method
class TestSplitProbe(Method):
    info = MethodInfo(name="test_split_probe", summary="Tries to read the test split while training.")
    Config = ProbeConfig

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        if ctx.step == 0:
            try_route(self.config)
        return super().training_loss(model, images, labels, ctx)
