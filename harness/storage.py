"""Where Ray Train and Ray Tune keep their scratch: checkpoints, controller and experiment state.

`output.storage` names it: a local or shared path, or a URI that pyarrow's filesystem layer opens
(`file://`, `s3://`, `gs://`, ...). On more than one node every node must reach it, so a cluster
points it at shared storage. It is scratch only: the result store and the dashboard always land in
the run directory, written by the driver. Without `output.storage` the scratch lives in the run
directory, as `ray_tune/` and `ray_train/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs

from harness.errors import HarnessInputError

STORAGE_KEY = "output.storage"
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def check_storage_uri(value: str) -> str:
    """The suite-time check (no I/O): a path, or a URI with a scheme pyarrow knows and a bucket or host."""
    value = value.strip()
    if not value:
        raise ValueError("give a path or a URI such as s3://BUCKET/PREFIX (or drop the key)")
    if "://" not in value:
        return value
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unknown storage scheme '{parts.scheme}://'; pyarrow opens {', '.join(s + '://' for s in SCHEMES)}"
                         " (or give a plain path)")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"a file:// URI names an absolute path, e.g. file:///shared/scratch (got {value!r})")
    elif not parts.netloc:
        raise ValueError(f"{scheme}:// needs a bucket or host, e.g. {scheme}://BUCKET/PREFIX (got {value!r})")
    return value


@dataclass(frozen=True)
class Storage:
    """A folder on some pyarrow filesystem; picklable, so it travels to Ray workers as it is."""

    filesystem: pyarrow.fs.FileSystem
    path: str  # inside `filesystem`: absolute on a local disk, `bucket/prefix` on object stores
    uri: str  # as the user wrote it, for messages

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pyarrow.fs.LocalFileSystem)

    def child(self, *parts: str) -> Storage:
        return Storage(self.filesystem, str(PurePosixPath(self.path, *parts)), self.uri)

    def ray_storage(self) -> dict[str, Any]:
        """`storage_path` / `storage_filesystem` for a Ray Train or Tune `RunConfig`. A local folder goes as a
        plain path, exactly as Ray handles its default; anything else goes with its filesystem."""
        if self.is_local:
            return {"storage_path": self.path, "storage_filesystem": None}
        return {"storage_path": self.path, "storage_filesystem": self.filesystem}

    def remove(self, *parts: str) -> None:
        """Delete a folder under this one if it exists (a stale attempt of a run)."""
        target = self.child(*parts).path
        if self.filesystem.get_file_info(target).type == pyarrow.fs.FileType.Directory:
            self.filesystem.delete_dir(target)

    def exists(self, *parts: str) -> bool:
        return self.filesystem.get_file_info(self.child(*parts).path).type != pyarrow.fs.FileType.NotFound


def local_storage(folder: Path) -> Storage:
    """A folder on this machine's disk (on a cluster: one every node mounts at the same path)."""
    return Storage(pyarrow.fs.LocalFileSystem(), str(folder.resolve()), str(folder))


def resolve_storage(value: str | None, run_dir: Path, *subfolders: str) -> Storage:
    """The scratch storage of one run: `value`/<subfolders> (e.g. suite name and hash), or the run directory.

    Opens the filesystem now, on the driver, so a bad URI or missing credentials fail before anything
    is written (HarnessInputError, naming `output.storage`), not an hour later on a worker.
    """
    if value is None:
        return local_storage(run_dir)
    try:
        if "://" in value:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(value)
        else:
            filesystem, path = pyarrow.fs.LocalFileSystem(), str(Path(value).expanduser().resolve())
        filesystem.get_file_info(path)  # one round trip: reachable, and the credentials are accepted
    except (pyarrow.ArrowInvalid, OSError, ValueError) as error:
        raise HarnessInputError(f"{STORAGE_KEY} ({value}): cannot open it: {' '.join(str(error).split())[:400]} "
                                "(check the URI, the credentials and the network; for s3:// add ?region=... "
                                "to skip the region lookup)") from None
    storage = Storage(filesystem, path.rstrip("/") or path, value)
    return storage.child(*subfolders) if subfolders else storage
