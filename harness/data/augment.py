"""Random crop and horizontal flip as whole-batch tensor ops on the training device.

Per-sample PIL transforms would cost more than the small models of this benchmark train for;
one padded gather and one `torch.where` per batch cost almost nothing, on CPU or GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.data.sources import DatasetInfo


class BatchAugment:
    """Random crop with zero padding, then (if the dataset allows it) a random horizontal flip."""

    def __init__(self, crop_padding: int, hflip: bool) -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.crop_padding = crop_padding
        self.hflip = hflip

    @classmethod
    def for_dataset(cls, info: DatasetInfo) -> BatchAugment:
        """The standard augmentation of a dataset, as its `DatasetInfo` declares it."""
        return cls(info.crop_padding, info.hflip)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augmented copy of images [B,C,H,W]; the same generator state gives the same output.

        Meant for floats in [0, 1], but crop and flip only move pixels, so uint8 works too (and is
        what `iterate_batches` passes: a quarter of the memory traffic, the same result).
        """
        if images.ndim != 4:
            raise ValueError(f"expected images [B,C,H,W], got shape {tuple(images.shape)}")
        if self.crop_padding > 0:
            images = self._random_crop(images, generator)
        if self.hflip:
            coin = torch.rand(len(images), generator=generator, device=_rng_device(images, generator))
            flip = coin.to(images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images

    def _random_crop(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Pad once, view every possible window without copying, then pick one window per sample."""
        batch, channels, height, width = images.shape
        pad = self.crop_padding
        padded = F.pad(images, (pad, pad, pad, pad))
        stride_b, stride_c, stride_h, stride_w = padded.stride()
        # windows[b, dy, dx] is sample b cropped at offset (dy, dx): a strided view, no copy
        windows = padded.as_strided(
            (batch, 2 * pad + 1, 2 * pad + 1, channels, height, width),
            (stride_b, stride_h, stride_w, stride_c, stride_h, stride_w),
        )
        offsets = torch.randint(
            0, 2 * pad + 1, (2, batch), generator=generator, device=_rng_device(images, generator)
        )
        offsets = offsets.to(images.device)
        return windows[torch.arange(batch, device=images.device), offsets[0], offsets[1]]


def _rng_device(images: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    """Where to draw random numbers: torch samples only on the generator's own device (a CPU
    generator may drive CUDA batches); the numbers are moved to the images afterwards."""
    return generator.device if generator is not None else images.device
