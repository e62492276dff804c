"""One writer per run directory: a second `harness.run` on a live run exits instead of mixing rows in.

The lock is `fcntl.flock` on `writer.lock` in the run directory. The kernel releases it when its
holder dies, however it dies (SIGKILL, OOM, power cut), so a lock left by a killed run never blocks
`--resume`; the holder's pid and host written inside only name it in the refusal. (flock is
per-host: two drivers on different machines sharing the directory over NFS are not excluded.)
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from harness.errors import HarnessInputError

LOCK_FILE = "writer.lock"


class RunDirectoryBusyError(HarnessInputError):
    """Another live process holds the run directory's writer lock."""


class WriterLock:
    """The exclusive writer lock of one run directory, held from `acquire` until `release` or exit."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (the run directory must exist) or raise `RunDirectoryBusyError` naming its holder."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by Ray's child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirectoryBusyError(
                f"{self.path.parent} is being written by a live harness.run ({holder}); wait for it to finish "
                "or stop it, or pass --out DIR to start a separate run") from None
        os.ftruncate(fd, 0)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "a process that has not written its pid yet"
