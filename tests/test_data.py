"""Data layer: registry contract, IDX reading, data locations, the test-split seal, tuning splits,
augmentation and batching. Fast, no Ray, no network."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from harness.data import (
    DATASETS,
    BatchAugment,
    DataAccess,
    IdxFormatError,
    ImageArrays,
    UnknownSplitError,
    clear_cache,
    dataset_info,
    iterate_batches,
    load_split,
    num_batches,
    read_idx,
    sealed_test_split,
    stratified_split,
    stratified_subsample,
    test_split_sealed,  # imported on purpose: it must not be collected as a test
)
from harness.data.sources import BUILTIN_SOURCES, DEBIAN_FASHION_MNIST_DIR
from harness.errors import DataUnavailableError, HarnessInputError, SealedSplitError

BUILTIN = {"fashion_mnist", "digits", "digits28", "mnist", "cifar10", "cifar100", "svhn"}
FLIPPABLE = {"fashion_mnist", "cifar10", "cifar100"}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch the network or leak cached splits into another."""
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    clear_cache()
    yield
    clear_cache()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_tiny_mnist(directory: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)


# ----------------------------------------------------------------------------- registry


def test_registry_has_the_builtin_datasets() -> None:
    assert set(DATASETS.names()) == BUILTIN


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_dataset_info_is_consistent(name: str) -> None:
    info = dataset_info(name)
    assert info is DATASETS.get(name).info and info.name == name
    assert info.channels in (1, 3) and len(info.mean) == len(info.std) == info.channels
    assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
    assert info.num_classes == (100 if name == "cifar100" else 10)
    assert info.hflip == (name in FLIPPABLE)
    assert info.crop_padding == {32: 4, 28: 2, 8: 1}[info.image_size]


def test_unknown_dataset_suggests_a_name() -> None:
    with pytest.raises(HarnessInputError, match="did you mean 'cifar10'"):
        dataset_info("cifar1O")


# ----------------------------------------------------------------------------- digits


def test_digits_loads_with_a_fixed_stratified_test_split() -> None:
    train, test = load_split("digits", "train"), load_split("digits", "test")
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    assert (
        test.labels.bincount(minlength=10) - 0.2 * (train.labels.bincount() + test.labels.bincount())
    ).abs().max() <= 1
    clear_cache()
    again = load_split("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


# ----------------------------------------------------------------------------- IDX files and locations


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips(tmp_path: Path, gz: bool) -> None:
    array = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    path = write_idx(tmp_path / ("x.gz" if gz else "x"), array, gz)
    assert np.array_equal(read_idx(path, expected_ndim=3), array)


def test_read_idx_rejects_bad_files_naming_the_path(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(IdxFormatError, match="bad-magic.*bad magic"):
        read_idx(bad_magic)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(IdxFormatError, match="truncated.*3 bytes"):
        read_idx(truncated)
    labels = write_idx(tmp_path / "labels", np.arange(4))
    with pytest.raises(IdxFormatError, match="expected a 3-d"):
        read_idx(labels, expected_ndim=3)
    assert issubclass(IdxFormatError, DataUnavailableError)


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason=f"Debian package dataset-fashion-mnist not installed ({DEBIAN_FASHION_MNIST_DIR} missing)",
)
def test_fashion_mnist_loads_from_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    train, test = load_split("fashion_mnist", "train"), load_split("fashion_mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10
    assert abs(train.images.float().mean().item() / 255 - dataset_info("fashion_mnist").mean[0]) < 1e-3


@pytest.mark.parametrize("subdir", ["fashion-mnist", ""])
def test_harness_data_dir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subdir: str) -> None:
    write_tiny_mnist(tmp_path / subdir, gz=subdir == "")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    train, test = load_split("fashion_mnist", "train"), load_split("fashion_mnist", "test")
    assert len(train) == 20 and len(test) == 10 and train.images.shape[1:] == (1, 28, 28)
    assert train.labels.tolist() == [i % 10 for i in range(20)]


def test_missing_fashion_mnist_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(BUILTIN_SOURCES["fashion_mnist"], "system_dirs", (tmp_path / "no-debian",))
    with pytest.raises(DataUnavailableError) as caught:
        load_split("fashion_mnist", "train")
    message = str(caught.value)
    for needle in (str(tmp_path / "fashion-mnist"), "no-debian", "dataset-fashion-mnist", "HARNESS_DATA_DIR"):
        assert needle in message


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_offline_torchvision_set_raises_naming_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataUnavailableError, match=str(tmp_path)):
        DATASETS.get(name).check_available()
    with pytest.raises(DataUnavailableError, match="HARNESS_DATA_DIR"):
        load_split(name, "train")


def fake_cifar10(root: Path, images: np.ndarray, labels: list[int]) -> None:
    """The torchvision CIFAR-10 layout: pickled dicts of flat CHW rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = {"data": images.reshape(len(images), -1), "labels": labels}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(rows))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


def fake_svhn(root: Path, images: np.ndarray, labels: list[int]) -> None:
    """The torchvision SVHN layout: .mat files holding X as HWCN and y in 1..10 (10 means digit 0)."""
    root.mkdir(parents=True, exist_ok=True)
    y = np.array([[label or 10] for label in labels], dtype=np.uint8)
    for split in ("train", "test"):
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": y})


@pytest.mark.parametrize(("name", "write"), [("cifar10", fake_cifar10), ("svhn", fake_svhn)])
def test_torchvision_sets_convert_to_nchw_uint8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, write: object
) -> None:
    import torchvision.datasets

    # the fake files cannot match torchvision's md5 sums of the real ones
    dataset_class = getattr(torchvision.datasets, BUILTIN_SOURCES[name].torchvision_class)
    monkeypatch.setattr(
        sys.modules[dataset_class.__module__], "check_integrity", lambda *args, **kwargs: True
    )
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32)).astype(np.uint8)  # NCHW truth
    write(tmp_path, images, [0, 1, 2, 3, 4, 9])
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    DATASETS.get(name).check_available()
    for split in ("train", "test"):
        arrays = load_split(name, split)
        assert arrays.images.dtype == torch.uint8 and arrays.images.is_contiguous()
        copies = 5 if (name, split) == ("cifar10", "train") else 1  # five identical fake batches
        assert torch.equal(arrays.images, torch.from_numpy(images).repeat(copies, 1, 1, 1))
        assert arrays.labels.tolist() == [0, 1, 2, 3, 4, 9] * copies


def test_mnist_reads_the_torchvision_raw_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny_mnist(tmp_path / "MNIST" / "raw", n_train=12, n_test=4, gz=False)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    assert load_split("mnist", "train").images.shape == (12, 1, 28, 28)
    assert len(load_split("mnist", "test")) == 4


# ----------------------------------------------------------------------------- stratified splits


def imbalanced_labels() -> torch.Tensor:
    return torch.cat([torch.full((count,), cls) for cls, count in enumerate([50, 31, 7, 100, 13])])


def test_stratified_split_is_disjoint_complete_and_proportional() -> None:
    labels = imbalanced_labels()
    rest, held = stratified_split(labels, 0.2, seed=3)
    assert set(rest.tolist()).isdisjoint(held.tolist())
    assert sorted(rest.tolist() + held.tolist()) == list(range(len(labels)))
    share = labels[held].bincount(minlength=5).double() - 0.2 * labels.bincount().double()
    assert share.abs().max() <= 1


def test_stratified_split_is_seeded() -> None:
    labels = imbalanced_labels()
    assert all(
        torch.equal(a, b)
        for a, b in zip(stratified_split(labels, 0.2, 7), stratified_split(labels, 0.2, 7), strict=True)
    )
    assert not torch.equal(stratified_split(labels, 0.2, 7)[1], stratified_split(labels, 0.2, 8)[1])


def test_stratified_subsample_keeps_balance() -> None:
    labels = imbalanced_labels()
    chosen = stratified_subsample(labels, 40, seed=1)
    assert len(chosen) == 40 and len(set(chosen.tolist())) == 40
    expected = 40 * labels.bincount().double() / len(labels)
    assert (labels[chosen].bincount(minlength=5).double() - expected).abs().max() < 1
    assert torch.equal(chosen, stratified_subsample(labels, 40, seed=1))
    assert not torch.equal(chosen, stratified_subsample(labels, 40, seed=2))
    assert torch.equal(stratified_subsample(labels, 10_000, seed=1), torch.arange(len(labels)))


# ----------------------------------------------------------------------------- the seal


def test_seal_blocks_every_path_to_the_test_split() -> None:
    load_split("digits", "test")  # cached before sealing: the seal must still win
    assert not test_split_sealed()
    with sealed_test_split():
        assert test_split_sealed()
        with pytest.raises(SealedSplitError, match="sealed during tuning"):
            load_split("digits", "test")
        with pytest.raises(SealedSplitError):
            DATASETS.get("digits").load("test")
        with pytest.raises(SealedSplitError):
            DATASETS.get("fashion_mnist").load("test")  # refused before any file is looked for
        assert len(load_split("digits", "train")) == 1438
        with sealed_test_split():
            assert test_split_sealed()
        assert test_split_sealed()  # the inner exit restored the outer state
    assert not test_split_sealed()
    assert len(load_split("digits", "test")) == 359
    assert len(DATASETS.get("digits").load("test")) == 359


def test_tune_handle_refuses_final_splits_and_records_reads() -> None:
    access = DataAccess("digits", "tune", val_fraction=0.25, split_seed=5)
    for name in ("test", "train"):
        with pytest.raises(SealedSplitError, match="tune_train and tune_val"):
            access.split(name)
    with pytest.raises(UnknownSplitError, match="tune_train, tune_val") as caught:
        access.split("validation")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, HarnessInputError)
    assert access.splits_read == ()
    tune_val = access.split("tune_val")
    assert access.splits_read == ("tune_val",)
    tune_train = access.split("tune_train")
    assert access.splits_read == ("tune_train", "tune_val")
    assert len(tune_train) + len(tune_val) == 1438
    train_counts = load_split("digits", "train").labels.bincount()
    assert (tune_val.labels.bincount() - 0.25 * train_counts).abs().max() <= 1
    same = DataAccess("digits", "tune", val_fraction=0.25, split_seed=5).split("tune_val")
    assert torch.equal(same.images, tune_val.images)


def test_tune_sizes_cap_with_class_balance() -> None:
    access = DataAccess("digits", "tune", tune_train_size=200, tune_val_size=50)
    tune_train, tune_val = access.split("tune_train"), access.split("tune_val")
    assert len(tune_train) == 200 and len(tune_val) == 50
    assert tune_train.labels.bincount().min() >= 19 and tune_val.labels.bincount().min() >= 4


def test_final_handle_serves_train_and_test() -> None:
    access = DataAccess("digits", "final")
    assert len(access.split("test")) == 359 and access.splits_read == ("test",)
    assert len(access.split("train")) == 1438 and access.splits_read == ("test", "train")
    with pytest.raises(UnknownSplitError, match="train, test"):
        access.split("tune_val")


# ----------------------------------------------------------------------------- augmentation


def asymmetric_batch(batch: int = 64, size: int = 8) -> torch.Tensor:
    """A left-to-right ramp, distinct per sample and channel, so flips and shifts are visible."""
    ramp = torch.arange(1, size + 1, dtype=torch.float32) / (size + 1)
    images = ramp.expand(batch, 3, size, size).clone()
    return images * torch.linspace(0.5, 1.0, batch)[:, None, None, None]


def test_augment_keeps_shape_range_and_is_deterministic() -> None:
    images = asymmetric_batch()
    augment = BatchAugment(crop_padding=2, hflip=True)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment(images, torch.Generator().manual_seed(1)))


def test_flip_flips_some_samples_and_only_flips() -> None:
    images = asymmetric_batch()
    out = BatchAugment(crop_padding=0, hflip=True)(images, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_crop_shifts_content_and_zero_padding_is_identity() -> None:
    images = asymmetric_batch(size=10)
    assert torch.equal(BatchAugment(0, hflip=False)(images, torch.Generator().manual_seed(0)), images)
    out = BatchAugment(crop_padding=2, hflip=False)(images, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    shifts = []
    for sample in range(len(images)):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[sample], padded[sample, :, dy : dy + 10, dx : dx + 10])
        ]
        assert matches, f"sample {sample} is not a padded crop of its input"
        shifts.append(matches[0])
    assert len(set(shifts)) > 5 and any(shift != (2, 2) for shift in shifts)


def test_augment_for_dataset_uses_the_info() -> None:
    augment = BatchAugment.for_dataset(dataset_info("cifar10"))
    assert (augment.crop_padding, augment.hflip) == (4, True)
    augment = BatchAugment.for_dataset(dataset_info("digits"))
    assert (augment.crop_padding, augment.hflip) == (1, False)


# ----------------------------------------------------------------------------- batches


def numbered(n: int) -> ImageArrays:
    """Samples whose label is their own index, so batches can be traced back."""
    return ImageArrays(torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8), torch.arange(n))


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_exactly_once_per_epoch(shuffle: bool) -> None:
    arrays = numbered(103)
    seen = []
    generator = torch.Generator().manual_seed(0)
    for images, labels in iterate_batches(
        arrays, 10, device=torch.device("cpu"), shuffle=shuffle, generator=generator
    ):
        assert images.dtype == torch.float32 and labels.dtype == torch.int64 and images.shape[1:] == (1, 4, 4)
        assert torch.equal(images, arrays.images[labels].float() / 255)
        seen += labels.tolist()
    assert sorted(seen) == list(range(103)) and (seen != list(range(103))) == shuffle
    assert num_batches(103, 10, drop_last=False) == 11 and num_batches(103, 10, drop_last=True) == 10


def test_two_ranks_are_disjoint_and_cover_everything() -> None:
    arrays = numbered(100)
    per_rank = []
    for rank in range(2):
        generator = torch.Generator().manual_seed(42)  # every rank seeds the same permutation
        batches = list(
            iterate_batches(
                arrays,
                8,
                device=torch.device("cpu"),
                shuffle=True,
                generator=generator,
                rank=rank,
                world_size=2,
            )
        )
        assert len(batches) == num_batches(100, 8, drop_last=False, world_size=2)
        per_rank.append([label for _, labels in batches for label in labels.tolist()])
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(100))


@pytest.mark.parametrize(
    ("n", "batch", "drop_last"), [(7, 3, False), (7, 3, True), (5, 2, False), (1, 4, False)]
)
def test_ranks_get_equal_batch_counts(n: int, batch: int, drop_last: bool) -> None:
    counts = [
        len(
            list(
                iterate_batches(
                    numbered(n),
                    batch,
                    device=torch.device("cpu"),
                    shuffle=False,
                    drop_last=drop_last,
                    rank=rank,
                    world_size=2,
                )
            )
        )
        for rank in range(2)
    ]
    assert counts == [num_batches(n, batch, drop_last, world_size=2)] * 2


def test_batches_apply_augmentation_deterministically() -> None:
    arrays = numbered(32)
    augment = BatchAugment(crop_padding=1, hflip=True)

    def epoch(seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return [
            images
            for images, _ in iterate_batches(
                arrays, 16, device=torch.device("cpu"), shuffle=True, generator=generator, augment=augment
            )
        ]

    assert all(torch.equal(a, b) for a, b in zip(epoch(0), epoch(0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(epoch(0), epoch(1), strict=True))
