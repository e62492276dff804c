"""Mini-batches straight from in-memory uint8 tensors, sharded across data-parallel workers.

No DataLoader: the whole split is already one tensor, so a batch is one index gather, a uint8
copy to the device (4x less traffic than float) and a conversion there.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from harness.data.augment import BatchAugment
from harness.data.sources import ImageArrays


def _check(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


def _per_worker(n: int, drop_last: bool, world_size: int) -> int:
    """Samples each worker gets: every worker must get the same count or collectives deadlock."""
    return n // world_size if drop_last else -(-n // world_size)


def num_batches(n: int, batch_size: int, drop_last: bool, world_size: int = 1) -> int:
    """Batches per epoch on each worker for `n` samples and a per-worker `batch_size`."""
    _check(batch_size, 0, world_size)
    per_worker = _per_worker(n, drop_last, world_size)
    return per_worker // batch_size if drop_last else -(-per_worker // batch_size)


def epoch_order(
    n: int, *, shuffle: bool, generator: torch.Generator | None, drop_last: bool, rank: int, world_size: int
) -> torch.Tensor:
    """This worker's sample indices for one epoch: position i of the permutation goes to worker
    i % world_size. When `n` is not divisible by `world_size`, the permutation is cut to a multiple
    (drop_last) or wrapped around (as torch's DistributedSampler does) so every worker gets as many."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world_size > 1:
        total = _per_worker(n, drop_last, world_size) * world_size
        if total > n:
            order = torch.cat([order, order[: total - n]]) if n else order
        order = order[:total][rank::world_size]
    return order


def iterate_batches(
    arrays: ImageArrays,
    batch_size: int,
    *,
    device: torch.device,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: BatchAugment | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (float images in [0,1] [B,C,H,W], int64 labels), both on `device`.

    `generator` (CPU) drives the shuffle and is handed to `augment`, so one seed fixes the epoch.
    """
    _check(batch_size, rank, world_size)
    device = torch.device(device)
    order = epoch_order(
        len(arrays),
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
    )
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    order = order.to(arrays.images.device)  # arrays already on the GPU (the engine's): gather there
    pin = device.type == "cuda" and arrays.images.device.type == "cpu"
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        images, labels = arrays.images[index], arrays.labels[index]
        if pin:
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(device, non_blocking=pin)
        if augment is not None:
            images = augment(images, generator)  # on uint8: crop and flip only move pixels
        yield images.float().div_(255.0), labels.to(device, non_blocking=pin)
