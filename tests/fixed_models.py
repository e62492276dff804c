"""Tiny models whose outputs a test chooses, shared by the method tests."""

from __future__ import annotations

import torch
from torch import nn


class FixedLogits(nn.Module):
    """Returns the same (learnable) logits for any batch: a model whose outputs a test chooses."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits
