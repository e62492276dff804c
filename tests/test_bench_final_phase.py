"""bench/final_phase.py at toy size (2 runs of a few steps on one slot), so the script cannot rot: it runs
both ways and the in-process loops, finds the same metrics both ways, and writes its section."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def test_the_final_phase_bench_runs_at_toy_size_and_writes_its_section(repo_root: Path, tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "bench/final_phase.py", "--runs", "2", "--steps", "5", "--slots", "1",
                           "--write", str(doc)], cwd=repo_root, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    assert "<!-- other:start -->\nkept\n<!-- other:end -->" in text  # another script's section is left alone
    section = text[text.index("<!-- final_phase:start -->"):text.index("<!-- final_phase:end -->")]
    assert "python bench/final_phase.py --runs 2 --steps 5 --slots 1" in section
    assert "grouped: 1 group(s)" in section  # one slot: both runs in one fit
    assert "| (u) and (g) rows: the same metrics for every seed | yes |" in section
