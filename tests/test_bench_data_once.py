"""bench/data_once.py at toy size (digits, one repeat), so the script that writes its figure cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parent.parent


def test_the_data_once_bench_writes_its_section_with_both_jobs(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "bench/data_once.py", "--dataset", "digits", "--repeats", "1", "--write",
                           str(doc)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = doc.read_text()
    assert "kept" in text and "<!-- data_once:start -->" in text and "<!-- data_once:end -->" in text
    assert "Reproduce: `python bench/data_once.py --dataset digits --repeats 1 --write" in text
    for job in ("final run", "tuning trial"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {job} |"))
        files, mapped = (float(cell) for cell in row.split("|")[3:5])
        assert files > 0 and mapped > 0, row
        assert re.search(r"\| [0-9.]+x \|$", row), row
    assert "load average" in text
