"""Loaded through $HARNESS_PLUGINS into a suite's driver where no small tmpfs can be mounted: once the file
named by $HARNESS_TEST_DISK_FULL exists, writing a row fails as on a full disk (ENOSPC)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

FLAG_ENV = "HARNESS_TEST_DISK_FULL"
_write_table = pq.write_table


def _write_unless_full(table: Any, where: Any, *args: Any, **kwargs: Any) -> None:
    flag = os.environ.get(FLAG_ENV)
    if flag and Path(flag).exists() and Path(where).parent.name == "rows":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
    _write_table(table, where, *args, **kwargs)


if os.environ.get(FLAG_ENV):
    pq.write_table = _write_unless_full
