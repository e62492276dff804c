"""The Parquet result store: one file per row, written durably, so a crash never loses or half-writes.

Every tuning trial, teacher training and final run becomes exactly one row (failures too). A row
is written to `rows/<row_id>.parquet` through a temp file, fsynced, renamed into place with
`os.replace` (atomic on POSIX filesystems), and the directory is fsynced: only then does it count
as written, so a power cut leaves the old row or the new one, never an empty file. A row file
found unreadable anyway (a disk fault, a store copied half-way) is set aside by `set_aside_unreadable`
and named, so `--resume` reruns its work. `consolidate()` gathers all rows into `results.parquet`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import HarnessError
from harness.rows import ResultRow, check_row

RESULTS_FILE = "results.parquet"
SET_ASIDE_DIR = "unreadable_rows"  # beside rows/: where unreadable row files go, kept for a post-mortem
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def row_file_name(row_id: str) -> str:
    """A file name for a row id that is stable, readable, filesystem-safe and distinct per id.

    Unsafe characters (and a leading '.', which would hide the file) become '_'; when anything was
    replaced, a digest of the id follows a '~' (never in an unchanged id), so `a:b` and `a/b` differ.
    """
    safe = _UNSAFE.sub("_", row_id)
    safe = "_" + safe[1:] if safe.startswith(".") else safe
    if safe != row_id:
        safe += "~" + hashlib.sha256(row_id.encode()).hexdigest()[:12]
    return safe + ".parquet"


class StoreWriteError(HarnessError, OSError):
    """The store could not write a row (a full disk, a read-only or vanished directory).

    Every row stored before it is intact; once the cause is fixed, `--resume` continues the run."""


class UnreadableRowError(HarnessError):
    """A row file that is not a readable one-row Parquet table (truncated, corrupt)."""


@dataclass(frozen=True)
class SetAsideRow:
    """An unreadable row file moved out of `rows/`: where it was, where it went, and why."""

    name: str
    moved_to: Path
    reason: str


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (a rename, a new file) durable, as POSIX requires for a rename."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_durable_dir(directory: Path) -> None:
    """Create `directory` (and parents) so that its entry survives a crash: the parent is fsynced."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    for created in missing:
        fsync_directory(created.parent)


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file durably: temp file, fsync, atomic rename, fsync of the directory.

    A write that fails (a full disk) leaves the previous file untouched and raises `StoreWriteError`."""
    try:
        make_durable_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
        os.close(fd)
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        pq.write_table(table, tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, StoreWriteError):
            raise _write_error(path, error) from error
        raise


def _write_error(path: Path, error: OSError) -> StoreWriteError:
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    hint = "free some space" if full else "fix the cause"
    return StoreWriteError(error.errno or errno.EIO,
                           f"cannot write {path}: {error.strerror or error}. Every row stored before it is intact; "
                           f"{hint}, then rerun with --resume to continue the run")


def read_row_file(path: Path) -> pa.Table:
    """One row file as a table; `UnreadableRowError` (naming the file) if it is not a one-row Parquet table."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise UnreadableRowError(f"{path}: unreadable row file ({error})") from error
    if table.num_rows != 1 or "row_id" not in table.column_names:
        raise UnreadableRowError(f"{path}: a row file must hold one row with a row_id, found {table.num_rows} rows")
    return table


class ResultStore:
    """Rows of one suite run, kept under `run_dir/rows/`."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.rows_dir = self.run_dir / "rows"

    def write(self, row: Mapping[str, Any] | ResultRow) -> None:
        """Store one row (it must carry a `row_id`); a row with the same id is replaced.

        A row with a `schema_version` (every row the runner writes) is checked against the row schema
        first: a bad one raises `RowSchemaError` naming the field, and nothing is written."""
        row = row.to_row() if isinstance(row, ResultRow) else dict(row)
        row_id = row.get("row_id")
        if not row_id:
            raise ValueError("a result row needs a non-empty 'row_id'")
        check_row(row)
        table = pa.Table.from_pylist([row])
        write_table_atomic(table, self.rows_dir / row_file_name(str(row_id)))

    def row_ids(self) -> set[str]:
        return set(self.read()["row_id"]) if self.rows_dir.exists() else set()

    def row_files(self) -> list[Path]:
        """The row files, without the temp files a killed writer left behind."""
        files = sorted(self.rows_dir.glob("*.parquet")) if self.rows_dir.exists() else []
        return [f for f in files if not f.name.startswith(".")]

    def read(self) -> pd.DataFrame:
        """All rows as one DataFrame (columns are the union over rows).

        An unreadable row file raises `UnreadableRowError` naming it: a row is never dropped silently."""
        tables = [read_row_file(f) for f in self.row_files()]
        if not tables:
            return pd.DataFrame({"row_id": pd.Series([], dtype=str)})
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()

    def set_aside_unreadable(self) -> list[SetAsideRow]:
        """Move every unreadable row file to `unreadable_rows/` and say which: its work then counts as
        not done, so a resumed run does it again. Returns what was moved (nothing, normally)."""
        moved = []
        for path in self.row_files():
            try:
                read_row_file(path)
            except UnreadableRowError as error:
                target_dir = self.run_dir / SET_ASIDE_DIR
                make_durable_dir(target_dir)
                target = target_dir / path.name
                os.replace(path, target)
                fsync_directory(self.rows_dir)
                moved.append(SetAsideRow(path.name, target, str(error.__cause__ or error)))
        return moved

    def completed(self, row_id: str) -> dict[str, Any] | None:
        """The stored row with this id if it finished successfully, else None."""
        path = self.rows_dir / row_file_name(row_id)
        if not path.exists():
            return None
        row = read_row_file(path).to_pylist()[0]
        return row if row.get("status") == "ok" else None

    def consolidate(self) -> Path:
        """Gather every row into `results.parquet` (atomically) and return its path."""
        frame = self.read()
        path = self.run_dir / RESULTS_FILE
        write_table_atomic(pa.Table.from_pandas(frame, preserve_index=False), path)
        return path


def read_results(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Rows of a run: the live row files when present, else the consolidated `results.parquet`."""
    store = ResultStore(run_dir)
    frame = store.read()
    if len(frame) == 0 and (store.run_dir / RESULTS_FILE).exists():
        frame = pd.read_parquet(store.run_dir / RESULTS_FILE)
    return frame
