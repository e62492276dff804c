"""Progress lines: phase counters stay visible (rich must not eat `[tune 1/2]` as markup)."""

from __future__ import annotations

import io

from rich.console import Console

from harness.progress import Progress, format_seconds


def test_progress_lines_show_phase_counts() -> None:
    buffer = io.StringIO()
    progress = Progress(Console(file=buffer, width=200, color_system=None))
    progress.start("final", 2)
    progress.advance("final", "bench/erm seed 0: already stored", skipped=True)
    progress.advance("final", "done")
    text = buffer.getvalue()
    assert "final: 2 to run" in text
    assert "[final 1/2]" in text and "[final 2/2]" in text
    assert "eta" not in text.splitlines()[-1]  # nothing left to estimate


def test_format_seconds() -> None:
    assert format_seconds(0) == "0m00s"
    assert format_seconds(75.4) == "1m15s"
    assert format_seconds(3725) == "1h02m05s"
