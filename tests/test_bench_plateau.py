"""bench/plateau.py at toy size (digits, two short budgets), so the figure behind a `reference_accuracy` cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "bench/plateau.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_plateau_bench_writes_accuracy_per_budget_and_seed(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    done = _run("suites/smoke.yaml", "--epochs", "1,3", "--seeds", "0,1", "--threads", "1", "--write", str(doc))
    assert done.returncode == 0, done.stderr[-3000:]
    text = doc.read_text()
    assert "kept" in text and "<!-- plateau-smoke:start -->" in text and "`smoke` (bench/plateau.py)" in text
    assert "Reproduce: `python bench/plateau.py suites/smoke.yaml --epochs 1,3 --seeds 0,1 --threads 1 --write" in text
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in text.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in ("1", "3")}
    assert set(rows) == {"1", "3"}
    for per_seed, mean, seconds in rows.values():
        scores = [float(s) for s in per_seed.split(",")]
        assert len(scores) == 2 and all(0 < s <= 100 for s in scores)
        assert abs(float(mean) - sum(scores) / 2) < 0.01 and float(seconds) >= 0
    assert float(rows["3"][1]) > 30  # three epochs of digits learn something: chance is 10%
    assert "declares no `reference_accuracy`" in text


def test_the_plateau_bench_names_a_missing_benchmark() -> None:
    done = _run("suites/smoke.yaml", "--benchmark", "nope", "--epochs", "1")
    assert done.returncode == 2 and "no benchmark named 'nope'" in done.stderr and "digits" in done.stderr
