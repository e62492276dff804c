"""Dataset splits in Ray's object store: the driver reads and puts each split once, jobs map it zero-copy.

Why: every tuning trial and final run used to read its dataset's files itself (a final run, in a fresh
Ray Train worker, always did), so every job paid the read and every node needed the files. Now the
driver reads each (dataset, split) once and `ray.put`s its numpy arrays; Ray maps them from shared
memory into every worker of a node (a node pulls a copy when its first job needs them), so a job reads
no file and a worker node needs none. A job given no handle (`RunSpec.data` None: tests, benches, in-process use)
reads the files as before, and so does a job asking for a split its handle does not carry.

The seal, per phase: a handle carries only the splits its phase may read. Tuning handles (trials and
tune-phase teachers) carry train splits only (tune_train and tune_val are carved from train in the
job); the driver puts a test split only when the first final-phase handle asks for it, so while a
suite tunes no test split is in the object store at all. The oracle protocol, which tunes against
test, reads its test sample from the files as before, so no tuning job is ever handed a test split's
reference. `SplitHandles.fetch` refuses the test split while sealed, as `load_split` does, and records
every split it hands out in the job's audit record beside the files it opened (`holds`,
`while_training` and the digest of the split's bytes), so `harness.verify` checks both alike.

The arrays are read-only: nothing in the harness writes into a split (every subset and batch is a
copy), and the tests check the shared bytes by digest after a run.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from harness import audit
from harness.data.sources import DATASETS, SPLITS, ImageArrays, refuse_if_sealed


@dataclass(frozen=True)
class SharedSplit:
    """One dataset split in Ray's object store: its reference and the sha256 of its bytes."""

    dataset: str
    split: str
    ref: Any  # a ray.ObjectRef of the (images, labels) numpy arrays
    digest: str
    examples: int = 0  # how many: what the final phase's groups are balanced by (`harness.final_costs`)

    @property
    def holds(self) -> str:
        """What the split is, as the audit names what a file holds: `digits:train`."""
        return f"{self.dataset}:{self.split}"


@dataclass(frozen=True)
class SplitHandles:
    """The shared splits one job may map; small and picklable, it travels in a `RunSpec`."""

    splits: tuple[SharedSplit, ...] = ()

    def fetch(self, dataset: str, split: str) -> ImageArrays | None:
        """The split mapped from the object store (no copy; read-only), recorded in the job's audit record;
        None when this handle does not carry it (the caller reads the files). The test split is refused
        while sealed, whether the handle carries it or not."""
        refuse_if_sealed(dataset, split)
        shared = next((s for s in self.splits if s.dataset == dataset and s.split == split), None)
        if shared is None:
            return None
        import ray  # deferred: the data layer imports without Ray

        images, labels = ray.get(shared.ref)
        audit.received(shared.holds, shared.digest)
        return mapped_arrays(images, labels)


def mapped_arrays(images: np.ndarray, labels: np.ndarray) -> ImageArrays:
    """Tensors over the object store's read-only buffers, without a copy. Torch warns that its tensors
    cannot be read-only; the harness never writes into a split (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return ImageArrays(torch.from_numpy(images), torch.from_numpy(labels))


def split_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of a split's shapes, dtypes and bytes: equal digests, equal arrays."""
    digest = hashlib.sha256()
    for array in (images, labels):
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.view(np.uint8).reshape(-1).data)
    return digest.hexdigest()


class SharedSplits:
    """The driver's side: each (dataset, split) read from its files and put in the object store once,
    and the handles of each phase (see the module docstring for what each may carry)."""

    def __init__(self) -> None:
        self._shared: dict[tuple[str, str], SharedSplit] = {}

    def share(self, dataset: str, split: str) -> SharedSplit:
        """The split's shared copy, reading and putting it on first use."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
        key = (dataset, split)
        if key not in self._shared:
            import ray  # deferred: the data layer imports without Ray

            arrays = DATASETS.get(dataset).load(split)  # sealed-wrapped; the driver is never sealed
            images, labels = arrays.images.contiguous().numpy(), arrays.labels.contiguous().numpy()
            self._shared[key] = SharedSplit(dataset, split, ray.put((images, labels)), split_digest(images, labels),
                                           examples=len(labels))
        return self._shared[key]

    def tuning(self, dataset: str) -> SplitHandles | None:
        """A tuning job's handle: the train split its tune_train and tune_val are carved from, nothing else."""
        return self._handles([(dataset, "train")])

    def final(self, dataset: str, test_sets: Iterable[str] = ()) -> SplitHandles | None:
        """A final-phase job's handle: the dataset's train and test splits, and the test splits of
        `test_sets` (registered datasets a final run evaluates on, such as OOD sets)."""
        wanted = [(dataset, "train"), (dataset, "test")]
        return self._handles(wanted + [(name, "test") for name in test_sets if name in DATASETS])

    def _handles(self, wanted: list[tuple[str, str]]) -> SplitHandles | None:
        """The handle of `wanted`; None without a Ray runtime (no object store to share through: jobs read files)."""
        import ray  # deferred: the data layer imports without Ray

        if not ray.is_initialized():
            return None
        return SplitHandles(tuple(self.share(name, split) for name, split in dict.fromkeys(wanted)))
