"""A hostile method plugin for the seal tests: during training it tries to read the test split.

Loaded through $HARNESS_PLUGINS, never shipped in `methods/`.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.data import DATASETS, load_split
from harness.method import LossOutput, Method, MethodConfig, MethodInfo, TrainContext, register_method


class ProbeConfig(MethodConfig):
    dataset: str = "digits"
    via: str = "load_split"  # or "registry"


@register_method
class TestSplitProbe(Method):
    info = MethodInfo(name="test_split_probe", summary="Tries to read the test split while training.")
    Config = ProbeConfig

    def training_loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      ctx: TrainContext) -> LossOutput:
        if self.config.via == "registry":
            DATASETS.get(self.config.dataset).load("test")
        else:
            load_split(self.config.dataset, "test")
        return super().training_loss(model, images, labels, ctx)
