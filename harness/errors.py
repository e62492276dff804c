"""Typed errors. Everything a user can get wrong is a `HarnessInputError`: the CLI exits 2 on it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Base class of every error the harness raises on purpose."""


class HarnessInputError(HarnessError):
    """Bad input from the user (suite, CLI flag, missing data): exit code 2, nothing written."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A ' did you mean 'x'?' suffix, or '' when nothing is close."""
    matches = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
    return f" did you mean '{matches[0]}'?" if matches else ""


class SuiteError(HarnessInputError):
    """A suite value is wrong; `key_path` names where, e.g. `methods[2].config.temperature`."""

    def __init__(self, key_path: str, message: str, source: str | None = None) -> None:
        self.key_path = key_path
        self.source = source
        where = f"{source}: " if source else ""
        self.message = message
        super().__init__(f"{where}{key_path or '<suite>'}: {message}")

    def __reduce__(self) -> tuple:  # picklable across Ray processes
        return (type(self), (self.key_path, self.message, self.source))


class UnknownNameError(HarnessInputError, KeyError):
    """A registry lookup failed; the message lists the known names and the closest one."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        msg = f"unknown {kind} '{name}';{did_you_mean(name, known)} known: {', '.join(known) or '(none)'}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])

    def __reduce__(self) -> tuple:  # picklable across Ray processes
        return (type(self), (self.kind, self.name, self.known))


class DataUnavailableError(HarnessInputError):
    """A dataset's files are not on this machine and cannot be downloaded."""


class SealedSplitError(HarnessError):
    """Code running in the tuning phase asked for evaluation data."""


class SealBrokenError(SealedSplitError):
    """Training code went around the seal (opened a file holding a test split, started a process):
    the audit refused it, and the trial or run fails whether or not the code caught the refusal."""
