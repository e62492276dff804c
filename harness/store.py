"""The Parquet result store: one file per row, written atomically, so a crash never loses or half-writes.

Every tuning trial, teacher training and final run becomes exactly one row (failures too). A row
is written to `rows/<row_id>.parquet` through a temp file and `os.replace`, which is atomic on
POSIX filesystems; `consolidate()` gathers all rows into `results.parquet` the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS_FILE = "results.parquet"
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


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file via a temp file in the same directory and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """Rows of one suite run, kept under `run_dir/rows/`."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.rows_dir = self.run_dir / "rows"

    def write(self, row: Mapping[str, Any]) -> None:
        """Store one row (it must carry a `row_id`); a row with the same id is replaced."""
        row_id = row.get("row_id")
        if not row_id:
            raise ValueError("a result row needs a non-empty 'row_id'")
        table = pa.Table.from_pylist([dict(row)])
        write_table_atomic(table, self.rows_dir / row_file_name(str(row_id)))

    def row_ids(self) -> set[str]:
        return set(self.read()["row_id"]) if self.rows_dir.exists() else set()

    def read(self) -> pd.DataFrame:
        """All rows as one DataFrame (columns are the union over rows)."""
        files = sorted(self.rows_dir.glob("*.parquet")) if self.rows_dir.exists() else []
        files = [f for f in files if not f.name.startswith(".")]  # temp files a killed writer left behind
        if not files:
            return pd.DataFrame({"row_id": pd.Series([], dtype=str)})
        tables = [pq.read_table(f) for f in files]
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()

    def completed(self, row_id: str) -> dict[str, Any] | None:
        """The stored row with this id if it finished successfully, else None."""
        path = self.rows_dir / row_file_name(row_id)
        if not path.exists():
            return None
        row = pq.read_table(path).to_pylist()[0]
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
