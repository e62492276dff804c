"""The audit of data reads: a Python audit hook that sees every file a process opens, and the seal's state.

The seal (`sealed`) refuses the test split to code that asks for it through the data layer. Code can
always go around an API, so in every process that runs training code an audit hook
(`sys.addaudithook`, which cannot be removed once added) watches what the process does: while
training runs (`training`), opening, renaming or hard-linking a file that a dataset declares as
holding its test split raises `SealBrokenError`, and so does starting a child process (it would read
outside the hook's sight). It also records every declared data file the process opens (`recording`);
a row carries that record and its digest, which `python -m harness.verify` checks. A split a job
maps from Ray's object store instead of reading files (`harness.data.shared`) is recorded beside
them (`received`), by name, with the digest of its bytes.

The state lives in the hook's closure, not in a module attribute, so no assignment turns it off. What
this cannot stop: code that rewrites the interpreter's own state (closures, frames, ctypes) or reads
files from C without Python's `open`. A process can always do arbitrary I/O; the audit makes the
ordinary routes visible and fails the trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness.errors import SealBrokenError

FILE_EVENTS = ("open", "os.rename", "os.link", "shutil.copyfile")  # first argument: the file touched
PROCESS_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork")


@dataclass(frozen=True)
class DeclaredFiles:
    """Data files by real path: what each holds (`digits:train,test`), and which hold a test split."""

    holds: Mapping[str, str]
    test: frozenset[str]


@dataclass
class AuditRecord:
    """The declared data files one job opened and the shared splits it received, in order, and what it
    tried that was refused."""

    reads: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    watched: list[str] = field(default_factory=list)  # the test-split files refused while training

    def add(self, entry: dict[str, Any]) -> None:
        if entry not in self.reads:
            self.reads.append(entry)

    def as_json(self) -> str:
        """The record as canonical JSON: what a row stores, and what its digest is of."""
        return canonical_record(self.reads, self.watched)

    @property
    def digest(self) -> str:
        return record_digest(self.as_json())

    def raise_if_broken(self) -> None:
        """Fail the job if anything was refused, even when the code that tried swallowed the error."""
        if self.refused:
            raise SealBrokenError(f"the seal was broken: {self.refused[0]}"
                                  + (f" (and {len(self.refused) - 1} more)" if len(self.refused) > 1 else ""))


def canonical_record(reads: list[dict[str, Any]], watched: list[str]) -> str:
    return json.dumps({"reads": reads, "watched": sorted(watched)}, sort_keys=True, separators=(",", ":"))


def record_digest(record_json: str) -> str:
    """sha256 of a row's `data_files_read` JSON, which its `audit_digest` must equal."""
    return hashlib.sha256(record_json.encode()).hexdigest()


class _Guard:
    """The seal's state and the hook that enforces it; reachable only through the functions below."""

    def __init__(self) -> None:
        self.sealed = 0  # nesting depth of `sealed`
        self.training = 0  # nesting depth of `training`
        self.files = DeclaredFiles({}, frozenset())
        self.records: list[AuditRecord] = []
        self.local = threading.local()  # re-entry guard: the hook's own calls must not re-enter it
        self.lock = threading.Lock()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not (self.training or self.records) or getattr(self.local, "busy", False):
            return
        if event in FILE_EVENTS:
            self.local.busy = True
            try:
                self._watch_file(event, args[0] if args else None)
            finally:
                self.local.busy = False
        elif self.training and event.startswith(PROCESS_EVENTS):
            self._refuse(f"{event} while training: a child process would read files the audit cannot see")

    def _watch_file(self, event: str, target: Any) -> None:
        if isinstance(target, int) or target is None:
            return
        try:
            real = os.path.realpath(os.fsdecode(target))
        except (TypeError, ValueError):
            return
        holds = self.files.holds.get(real)
        if holds is None:
            return
        refused = bool(self.training) and real in self.files.test
        entry = {"file": real, "holds": holds, "while_training": bool(self.training)}
        for record in list(self.records):
            record.add(entry)
        if refused:
            self._refuse(f"{event} of {real} (it holds {holds}) while training")

    def received(self, holds: str, digest: str) -> None:
        """Record a split handed to the job from the object store; a test split while training is refused."""
        entry = {"object": holds, "holds": holds, "digest": digest, "while_training": bool(self.training)}
        for record in list(self.records):
            record.add(entry)
        if self.training and holds.endswith(":test"):
            self._refuse(f"the object-store split {holds} while training")

    def _refuse(self, what: str) -> None:
        for record in list(self.records):
            record.refused.append(what)
        raise SealBrokenError(f"the test split is sealed while training: refused {what}")


def _seal_functions() -> tuple[Callable[..., Any], ...]:
    """The public functions, as closures over one guard whose hook is installed at first use."""
    guard = _Guard()
    installed: list[bool] = []

    def install() -> None:
        with guard.lock:
            if not installed:
                sys.addaudithook(guard.hook)
                installed.append(True)

    @contextmanager
    def sealed() -> Iterator[None]:
        """The seal on the data API: the test split is refused inside (nests; restores on exit)."""
        install()
        guard.sealed += 1
        try:
            yield
        finally:
            guard.sealed -= 1

    @contextmanager
    def training(files: DeclaredFiles) -> Iterator[None]:
        """While training code runs: sealed, and the test split's files (and child processes) refused."""
        install()
        guard.files = files
        guard.sealed += 1
        guard.training += 1
        for record in guard.records:
            record.watched = sorted(set(record.watched) | set(files.test))
        try:
            yield
        finally:
            guard.training -= 1
            guard.sealed -= 1

    @contextmanager
    def recording(files: DeclaredFiles) -> Iterator[AuditRecord]:
        """Collect the declared data files opened inside into an `AuditRecord` (one per job)."""
        install()
        guard.files = files
        record = AuditRecord()
        guard.records.append(record)
        try:
            yield record
        finally:
            guard.records.remove(record)

    def is_sealed() -> bool:
        return guard.sealed > 0

    def is_training() -> bool:
        return guard.training > 0

    def received(holds: str, digest: str) -> None:
        """Record, in every open record, a split (`digits:train`) the job mapped from the object store."""
        install()
        guard.received(holds, digest)

    return sealed, training, recording, is_sealed, is_training, received


sealed, training, recording, is_sealed, is_training, received = _seal_functions()
