"""Progress of a suite run: per phase, done/total, elapsed and ETA, one line per event."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@dataclass
class PhaseProgress:
    name: str
    total: int
    done: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    def eta_s(self) -> float | None:
        ran = self.done - self.skipped
        if ran <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / ran * (self.total - self.done)


class Progress:
    """Prints `[phase done/total] message  elapsed .. eta ..` lines to stderr."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.quiet = quiet
        self.phases: dict[str, PhaseProgress] = {}
        self.started = time.monotonic()

    def start(self, phase: str, total: int) -> None:
        self.phases[phase] = PhaseProgress(phase, total)
        self.say(f"[bold]{phase}[/bold]: {total} to run")

    def advance(self, phase: str, message: str = "", skipped: bool = False) -> None:
        state = self.phases[phase]
        state.done += 1
        state.skipped += int(skipped)
        eta = state.eta_s()
        eta_text = f"  eta {format_seconds(eta)}" if eta is not None and state.done < state.total else ""
        self.say(f"[cyan]{escape(f'[{phase} {state.done}/{state.total}]')}[/cyan] {message}  "
                 f"[dim]elapsed {format_seconds(time.monotonic() - self.started)}{eta_text}[/dim]")

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)
