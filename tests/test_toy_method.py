"""A method plugin from outside the harness (`tests/toy_method.py`, one class): it validates in a suite only
where its declared need (a teacher) is met, trains through the harness's jobs with the typed context, and
the CLI discovers it through $HARNESS_PLUGINS."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from harness.errors import SuiteError
from harness.jobs import RunSpec, final_run, train_teacher
from harness.method import METHODS, LossOutput, TrainContext, build_method
from harness.plugins import PLUGINS_ENV
from harness.suite import MethodEntry, validate_suite
from harness.train_settings import Budget

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"


@pytest.fixture
def toy() -> Iterator[None]:
    """The toy registered as $HARNESS_PLUGINS would, and forgotten after the test."""
    import tests.toy_method  # noqa: F401

    if "toy_pseudo_labels" not in METHODS:  # an earlier test removed it; the module is cached
        METHODS.add("toy_pseudo_labels", tests.toy_method.ToyPseudoLabels)
    yield
    METHODS._entries.pop("toy_pseudo_labels", None)


def smoke_with_toy() -> dict[str, Any]:
    raw = yaml.safe_load(SMOKE.read_text())
    raw["methods"] = [{"name": "erm"}, {"name": "toy_pseudo_labels", "config": {"weight": 0.3}}]
    return raw


def test_the_toy_validates_where_a_teacher_is_declared_and_nowhere_else(toy: None) -> None:
    assert validate_suite(smoke_with_toy()).methods[1].name == "toy_pseudo_labels"
    raw = smoke_with_toy()
    del raw["benchmarks"][0]["teacher"]
    with pytest.raises(SuiteError, match=r"benchmarks\[0\]\.teacher.*toy_pseudo_labels.*needs a teacher"):
        validate_suite(raw)


def test_the_toy_trains_with_the_harness_teacher_and_reports_its_loss_parts(toy: None) -> None:
    bench = validate_suite(smoke_with_toy()).benchmarks[0]
    assert bench.teacher is not None
    bench = bench.model_copy(update={"budget": Budget(steps=4),
                                     "teacher": bench.teacher.model_copy(update={"budget": Budget(steps=4)})})
    teacher_state, _ = train_teacher(bench, "final", seed=0)
    row = final_run(RunSpec(benchmark=bench, method=MethodEntry(name="toy_pseudo_labels"), seed=0,
                            metrics=("accuracy",)), teacher_state)
    assert 0.0 <= row["test/accuracy"] <= 1.0 and row["train/steps"] == 4.0


def test_the_toy_loss_adds_the_ramped_pseudo_label_term(toy: None) -> None:
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    images, labels = torch.randn(8, 4), torch.zeros(8, dtype=torch.int64)
    method = build_method("toy_pseudo_labels", {"weight": 1.0, "rampup": 0.5})

    def loss_at(step: int) -> LossOutput:
        ctx = TrainContext(step=step, total_steps=10, epoch=0, num_classes=3, device=torch.device("cpu"),
                           teacher=teacher)
        return method.training_loss(student, images, labels, ctx)

    start, half_way = loss_at(0), loss_at(5)
    assert torch.allclose(start.loss, start.parts["ce"])  # the ramp starts at 0
    assert torch.allclose(half_way.loss, half_way.parts["ce"] + half_way.parts["pseudo_ce"])


def test_the_cli_discovers_the_toy_through_the_environment(tmp_path: Path) -> None:
    """In a fresh process with $HARNESS_PLUGINS, the toy is a known method whose need is checked (exit 2)."""
    root = SMOKE.parent.parent
    env = {**os.environ, PLUGINS_ENV: "tests.toy_method",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "harness.run", str(SMOKE), "--out", str(tmp_path), "--set",
               "methods=[{name: toy_pseudo_labels}]", "--set", "benchmarks[0].teacher=null"]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "benchmarks[0].teacher: method 'toy_pseudo_labels' (methods[0]) needs a teacher" in done.stderr
    assert not any(tmp_path.iterdir())
