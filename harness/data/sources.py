"""What a dataset is, where its files come from, and the seal that keeps its test split out of tuning.

Every registered source is wrapped so that its `load("test")` refuses while the seal is on: the
seal then holds even for code that bypasses `load_split` and calls the registry directly.
Heavy libraries (torchvision, scikit-learn) are imported only when a dataset is first read, so
importing `harness.data` stays cheap.
"""

from __future__ import annotations

import functools
import importlib.util
import operator
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch

from harness import audit
from harness.data.idx import IdxFormatError, find_idx_file, read_idx
from harness.data.splits import stratified_split
from harness.errors import DataUnavailableError, SealedSplitError
from harness.registry import Registry

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that models, augmentation and normalisation need."""

    name: str
    channels: int
    num_classes: int
    image_size: int  # square: H == W
    mean: tuple[float, ...]  # per channel, of images scaled to [0, 1]
    std: tuple[float, ...]
    hflip: bool  # a horizontal flip keeps the label
    crop_padding: int  # zero padding for random-crop augmentation


UNLABELLED = -100  # the label of an image whose label a scenario hides (F.cross_entropy's ignore_index)


@dataclass(frozen=True)
class ImageArrays:
    """A whole split in memory as uint8 NCHW images and int64 labels (4x smaller than float)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageArrays:
        """The samples at `index` (an index or boolean mask tensor), copied."""
        return ImageArrays(self.images[index], self.labels[index])


class DatasetSource(Protocol):
    """A registry entry: knows its dataset's facts and how to read its raw files."""

    info: DatasetInfo

    def check_available(self) -> None:
        """Raise `DataUnavailableError` saying where to put the files when they are missing."""
        ...

    def load(self, split: Split) -> ImageArrays:
        """Read a split from disk. Other modules go through `load_split`, which caches."""
        ...

    # Optional: `split_files(split) -> tuple[Path, ...]`, the files that hold the split. The audit refuses
    # opening a test split's files while training runs; a source that declares none is not watched.


def sealed_test_split() -> AbstractContextManager[None]:
    """Process-wide: while inside, no code can read any dataset's test split through the data layer.
    Nests; restores on exit. Its state lives in `harness.audit`'s closure: no attribute turns it off."""
    return audit.sealed()


def test_split_sealed() -> bool:
    """Whether the test split is currently sealed in this process."""
    return audit.is_sealed()


test_split_sealed.__test__ = False  # type: ignore[attr-defined]  # its name must not look like a pytest test


def refuse_if_sealed(name: str, split: str) -> None:
    """Raise `SealedSplitError` when `split` is the test split and the seal is on."""
    if split == "test" and audit.is_sealed():
        raise SealedSplitError(
            f"the test split of '{name}' is sealed during tuning and while training runs: tuning code may read "
            "only tune_train and tune_val, and a final run reads test once training and finalize are done"
        )


def declared_files() -> audit.DeclaredFiles:
    """Every registered dataset's files by real path, with what each holds, for the audit hook."""
    holds: dict[str, set[str]] = {}
    test: set[str] = set()
    for name in DATASETS.names():
        source = DATASETS.get(name)
        for split in SPLITS:
            for path in split_files(source, split):
                real = os.path.realpath(path)
                holds.setdefault(real, set()).add(f"{name}:{split}")
                if split == "test":
                    test.add(real)
    return audit.DeclaredFiles({path: ",".join(sorted(h)) for path, h in holds.items()}, frozenset(test))


def split_files(source: DatasetSource, split: Split) -> tuple[Path, ...]:
    """The files a source declares as holding `split` (none for a source that declares nothing)."""
    declare = getattr(source, "split_files", None)
    return tuple(declare(split)) if declare is not None else ()


@contextmanager
def training_window() -> Iterator[None]:
    """While training code runs (the method's hooks and `finalize`): the test split is sealed, and the
    audit refuses opening any file a dataset declares as holding it."""
    with audit.training(declared_files()):
        yield


@contextmanager
def audit_record() -> Iterator[audit.AuditRecord]:
    """The declared data files this job opens, for its row (`data_files_read`, `audit_digest`)."""
    with audit.recording(declared_files()) as record:
        yield record


class _SealedSource:
    """Delegates to a source, refusing `load('test')` while sealed and unknown split names always.

    The source it wraps is not an attribute (`.inner` handed training code the unsealed source)."""

    __slots__ = ("info", "name", "_load", "_check", "_declare", "_wraps")

    def __init__(self, name: str, inner: DatasetSource) -> None:
        self.name = name
        self.info = inner.info
        self._load = inner.load
        self._check = inner.check_available
        self._declare = functools.partial(split_files, inner)
        self._wraps = functools.partial(operator.is_, inner)

    def check_available(self) -> None:
        self._check()

    def split_files(self, split: Split) -> tuple[Path, ...]:
        return self._declare(split)

    def load(self, split: Split) -> ImageArrays:
        refuse_if_sealed(self.name, split)
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}' of '{self.name}'; valid: {', '.join(SPLITS)}")
        return self._load(split)

    def wraps(self, source: object) -> bool:
        return bool(self._wraps(source))


class _DatasetRegistry(Registry[DatasetSource]):
    """A `Registry` that wraps each source in the seal, however it is registered."""

    def add(self, name: str, obj: DatasetSource) -> None:
        existing = self._entries.get(name)
        if isinstance(existing, _SealedSource) and existing.wraps(obj):
            return
        if isinstance(obj, _SealedSource):
            raise ValueError(f"dataset '{name}': register the source itself, not a registered (sealed) one")
        if obj.info.name != name:
            raise ValueError(f"dataset registered as '{name}' but its info is named '{obj.info.name}'")
        super().add(name, _SealedSource(name, obj))


DATASETS: Registry[DatasetSource] = _DatasetRegistry("dataset")


# --------------------------------------------------------------------------- where files live

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_STEMS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def data_root() -> Path:
    """$HARNESS_DATA_DIR, else ~/.cache/harness/data: where torchvision-layout files are read and downloaded."""
    env = os.environ.get("HARNESS_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "harness" / "data"


def downloads_allowed() -> bool:
    """False under HARNESS_OFFLINE=1, so a missing dataset fails at once instead of trying the network."""
    return os.environ.get("HARNESS_OFFLINE", "").strip().lower() not in ("1", "true", "yes")


def _checked(info: DatasetInfo, arrays: ImageArrays, where: object) -> ImageArrays:
    """`arrays`, after checking they match `info`: a wrong file should fail here, not inside a model."""
    expected = (info.channels, info.image_size, info.image_size)
    if tuple(arrays.images.shape[1:]) != expected:
        raise DataUnavailableError(
            f"{where}: '{info.name}' images have shape {tuple(arrays.images.shape[1:])}, expected {expected}"
        )
    if len(arrays) and not 0 <= int(arrays.labels.min()) <= int(arrays.labels.max()) < info.num_classes:
        raise DataUnavailableError(f"{where}: '{info.name}' labels fall outside 0..{info.num_classes - 1}")
    return arrays


class IdxSource:
    """An MNIST-layout dataset: the four IDX files (raw or .gz) in the first directory holding all of
    them, with a torchvision download into `data_root()/<class>/raw` as the last resort."""

    def __init__(
        self,
        info: DatasetInfo,
        torchvision_class: str,
        env_subdirs: tuple[str, ...] = (),
        system_dirs: tuple[Path, ...] = (),
        install_hint: str = "",
    ) -> None:
        self.info = info
        self.torchvision_class = torchvision_class
        self.env_subdirs = env_subdirs
        self.system_dirs = system_dirs
        self.install_hint = install_hint

    def search_dirs(self) -> list[Path]:
        """Where to look, in order; read at call time so a changed HARNESS_DATA_DIR is honoured."""
        env = os.environ.get("HARNESS_DATA_DIR")
        dirs = [Path(env).expanduser() / sub for sub in self.env_subdirs] if env else []
        dirs += [*self.system_dirs, data_root() / self.torchvision_class / "raw"]
        return list(dict.fromkeys(dirs))

    def _find_dir(self) -> Path | None:
        stems = [stem for pair in _IDX_STEMS.values() for stem in pair]
        for directory in self.search_dirs():
            if all(find_idx_file(directory, stem) for stem in stems):
                return directory
        return None

    def check_available(self) -> None:
        self._locate()

    def _locate(self) -> Path:
        found = self._find_dir()
        if found is not None:
            return found
        reason = "downloads are disabled (HARNESS_OFFLINE=1)"
        if downloads_allowed():
            import torchvision.datasets  # deferred: importing torchvision costs about a second

            try:
                getattr(torchvision.datasets, self.torchvision_class)(str(data_root()), download=True)
                reason = ""
            except Exception as error:  # urllib, http and checksum failures all mean "not available"
                reason = f"download failed: {error}"
        found = self._find_dir()
        if found is None:
            raise DataUnavailableError(self._unavailable_message(reason))
        return found

    def _unavailable_message(self, reason: str) -> str:
        stems = ", ".join(stem for pair in _IDX_STEMS.values() for stem in pair)
        searched = "\n".join(f"  - {d}" for d in self.search_dirs())
        return (
            f"dataset '{self.info.name}' is not available: no directory below holds all four IDX files "
            f"({stems}; raw or .gz):\n{searched}\n"
            f"To fix: {self.install_hint}copy the files into one of those directories (set HARNESS_DATA_DIR "
            f"to choose your own); when online they download automatically into "
            f"{data_root() / self.torchvision_class / 'raw'}.{f' ({reason})' if reason else ''}"
        )

    def split_files(self, split: Split) -> tuple[Path, ...]:
        """Every copy of the split's two IDX files in any searched directory (raw or .gz)."""
        found = (find_idx_file(directory, stem) for directory in self.search_dirs() for stem in _IDX_STEMS[split])
        return tuple(path for path in found if path is not None)

    def load(self, split: Split) -> ImageArrays:
        directory = self._locate()
        image_stem, label_stem = _IDX_STEMS[split]
        image_path, label_path = find_idx_file(directory, image_stem), find_idx_file(directory, label_stem)
        assert image_path is not None and label_path is not None  # _locate found all four
        images = torch.from_numpy(read_idx(image_path, expected_ndim=3)).unsqueeze(1)
        labels = torch.from_numpy(read_idx(label_path, expected_ndim=1)).long()
        if len(images) != len(labels):
            raise IdxFormatError(
                f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels"
            )
        return _checked(self.info, ImageArrays(images, labels), directory)


class TorchvisionSource:
    """A dataset read (and, when online, downloaded) by a torchvision class in `data_root()`."""

    def __init__(
        self,
        info: DatasetInfo,
        torchvision_class: str,
        files: dict[str, tuple[str, ...]],
        split_keyword: bool = False,
    ) -> None:
        self.info = info
        self.torchvision_class = torchvision_class
        self.files = files  # per split, the paths below the root that torchvision reads
        self.split_keyword = split_keyword  # SVHN takes split="train"; CIFAR takes train=True

    def _construct(self, root: Path, split: str, download: bool) -> Any:
        import torchvision.datasets  # deferred: importing torchvision costs about a second

        dataset_class = getattr(torchvision.datasets, self.torchvision_class)
        split_args = {"split": split} if self.split_keyword else {"train": split == "train"}
        return dataset_class(str(root), download=download, **split_args)

    def _ensure(self, split: str) -> Path:
        """The root, once the split's files are there: present files are never downloaded again."""
        root = data_root()
        if all((root / name).is_file() for name in self.files[split]):
            return root
        if not downloads_allowed():
            raise DataUnavailableError(self._unavailable(root, "downloads are disabled (HARNESS_OFFLINE=1)"))
        try:
            self._construct(root, split, download=True)
        except Exception as error:  # urllib, http and checksum failures all mean "not available"
            raise DataUnavailableError(self._unavailable(root, f"download failed: {error}")) from error
        return root

    def _unavailable(self, root: Path, reason: str) -> str:
        names = dict.fromkeys(name for split in SPLITS for name in self.files[split])
        expected = "\n".join(f"  - {root / name}" for name in names)
        return (
            f"dataset '{self.info.name}' is not available in {root} (HARNESS_DATA_DIR, default "
            f"~/.cache/harness/data). torchvision.datasets.{self.torchvision_class} expects:\n{expected}\n"
            f"Copy the files there in that torchvision layout (or set HARNESS_DATA_DIR to a directory that "
            f"holds them); when online they download automatically on first use. ({reason})"
        )

    def check_available(self) -> None:
        for split in SPLITS:
            self._ensure(split)

    def split_files(self, split: Split) -> tuple[Path, ...]:
        """The split's own files (metadata that every split reads is not split data)."""
        others = {name for other in SPLITS if other != split for name in self.files[other]}
        return tuple(data_root() / name for name in self.files[split] if name not in others)

    def load(self, split: Split) -> ImageArrays:
        root = self._ensure(split)
        try:
            dataset = self._construct(root, split, download=False)
        except (RuntimeError, OSError, ValueError) as error:
            raise DataUnavailableError(self._unavailable(root, f"reading failed: {error}")) from error
        images = torch.as_tensor(dataset.data, dtype=torch.uint8)
        if images.shape[-1] == self.info.channels != images.shape[1]:  # CIFAR stores NHWC, SVHN NCHW
            images = images.permute(0, 3, 1, 2)
        labels = dataset.targets if hasattr(dataset, "targets") else dataset.labels
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        return _checked(self.info, ImageArrays(images.contiguous(), labels), root)


class DigitsSource:
    """scikit-learn's bundled 8x8 digits: always present, so tests and smoke runs need no download.

    It has no official test split, so ours is a stratified 20% with a fixed seed that no suite
    setting can change: the test set is the same in every run and every study.
    """

    TEST_FRACTION = 0.2
    TEST_SPLIT_SEED = 1797

    info = DatasetInfo("digits", 1, 10, 8, (0.3053,), (0.3759,), hflip=False, crop_padding=1)

    def check_available(self) -> None:
        try:
            import sklearn.datasets  # noqa: F401
        except ImportError as error:
            raise DataUnavailableError(
                f"dataset 'digits' needs scikit-learn: pip install scikit-learn ({error})"
            ) from error

    def split_files(self, split: Split) -> tuple[Path, ...]:
        """scikit-learn's one file holds both splits (found without importing scikit-learn)."""
        spec = importlib.util.find_spec("sklearn")
        roots = spec.submodule_search_locations if spec is not None else None
        return tuple(Path(root) / "datasets" / "data" / "digits.csv.gz" for root in roots or ())

    def load(self, split: Split) -> ImageArrays:
        return _checked(self.info, self.load_8x8(split), "sklearn digits")

    def load_8x8(self, split: Split) -> ImageArrays:
        self.check_available()
        from sklearn.datasets import load_digits

        bunch = load_digits()
        scaled = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # pixel values are 0..16
        everything = ImageArrays(torch.from_numpy(scaled).unsqueeze(1), torch.from_numpy(bunch.target).long())
        train, test = stratified_split(everything.labels, self.TEST_FRACTION, self.TEST_SPLIT_SEED)
        return everything.subset(train if split == "train" else test)


class Digits28Source(DigitsSource):
    """The same digits drawn MNIST-style: each 8x8 image resized to 20x20 and centred in a 28x28 frame.

    It has the task shape of MNIST and Fashion-MNIST (1 channel, 10 classes, 28x28), which makes it
    the offline tuning dataset of cross_dataset suites and an out-of-distribution set for them.
    """

    info = DatasetInfo("digits28", 1, 10, 28, (0.1555,), (0.2770,), hflip=False, crop_padding=2)

    def load(self, split: Split) -> ImageArrays:
        small = self.load_8x8(split)
        images = torch.nn.functional.interpolate(small.images.float(), size=(20, 20), mode="bilinear",
                                                 align_corners=False)
        framed = torch.nn.functional.pad(images, (4, 4, 4, 4)).round().clamp(0, 255).to(torch.uint8)
        return _checked(self.info, ImageArrays(framed.contiguous(), small.labels), "sklearn digits (28x28)")


# --------------------------------------------------------------------------- the built-in datasets

FASHION_MNIST = DatasetInfo("fashion_mnist", 1, 10, 28, (0.2860,), (0.3530,), hflip=True, crop_padding=2)
MNIST = DatasetInfo("mnist", 1, 10, 28, (0.1307,), (0.3081,), hflip=False, crop_padding=2)
CIFAR10 = DatasetInfo("cifar10", 3, 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, 4)
CIFAR100 = DatasetInfo("cifar100", 3, 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, 4)
SVHN = DatasetInfo("svhn", 3, 10, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), False, 4)

_CIFAR10_BATCHES = (
    "batches.meta",
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
)
CIFAR10_FILES = {
    "train": tuple(f"cifar-10-batches-py/{name}" for name in _CIFAR10_BATCHES),
    "test": ("cifar-10-batches-py/batches.meta", "cifar-10-batches-py/test_batch"),
}
CIFAR100_FILES = {split: ("cifar-100-python/meta", f"cifar-100-python/{split}") for split in SPLITS}
SVHN_FILES = {split: (f"{split}_32x32.mat",) for split in SPLITS}
_DEBIAN_HINT = f"apt-get install dataset-fashion-mnist (puts them in {DEBIAN_FASHION_MNIST_DIR}), or "

# the built-in sources by name (the registry holds them sealed; tests reconfigure these)
BUILTIN_SOURCES: dict[str, DatasetSource] = {
    "fashion_mnist": IdxSource(FASHION_MNIST, "FashionMNIST", ("fashion-mnist", ""), (DEBIAN_FASHION_MNIST_DIR,),
                               _DEBIAN_HINT),
    "digits": DigitsSource(),
    "digits28": Digits28Source(),
    "mnist": IdxSource(MNIST, "MNIST"),
    "cifar10": TorchvisionSource(CIFAR10, "CIFAR10", CIFAR10_FILES),
    "cifar100": TorchvisionSource(CIFAR100, "CIFAR100", CIFAR100_FILES),
    "svhn": TorchvisionSource(SVHN, "SVHN", SVHN_FILES, split_keyword=True),
}
for _name, _source in BUILTIN_SOURCES.items():
    DATASETS.add(_name, _source)
