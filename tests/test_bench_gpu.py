"""bench/gpu.py and bench/engine_speed.py at toy size on CPU, so neither can rot before a GPU runs them:
both loops train in every mode they are given, the engine is asked for exactly those modes, and each
report lands in its own section (or JSON file) with the device named."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _bench(name: str) -> ModuleType:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "bench"))  # the bench scripts import their siblings by name
        return importlib.import_module(name)


@pytest.fixture(scope="module")
def gpu() -> ModuleType:
    return _bench("gpu")


@pytest.fixture(scope="module")
def loops() -> ModuleType:
    return _bench("speed_loops")


def test_modes_parse_and_name_the_engine_settings_they_ask_for(loops: ModuleType) -> None:
    modes = loops.Modes.parse("bf16+channels_last")
    assert modes.label == "bf16+channels_last" and loops.Modes.parse("fp32") == loops.Modes()
    speed = modes.speed()
    assert (speed.bf16, speed.channels_last, speed.compile) == ("on", "on", "off")
    with pytest.raises(ValueError, match="unknown mode"):
        loops.Modes.parse("fp16")


def test_the_plain_loop_and_the_engine_do_the_same_arithmetic_in_fp32(loops: ModuleType, gpu: ModuleType) -> None:
    data, recipe, cpu = gpu.random_cifar(16), loops.Recipe(batch_size=4, steps=3), torch.device("cpu")
    plain_model, engine_model = gpu.make_model("airbench", 16), gpu.make_model("airbench", 16)
    plain_loss = loops.plain_train(plain_model, data, recipe, loops.Modes(), cpu)
    engine_loss, record = loops.engine_train(engine_model, data, recipe, loops.Modes(), cpu)
    assert plain_loss == engine_loss and record["engine_precision"] == "fp32"
    assert all(torch.equal(a, b) for a, b in zip(plain_model.state_dict().values(),
                                                 engine_model.state_dict().values(), strict=True))


def test_gpu_bench_runs_at_toy_size_on_cpu_and_writes_json_and_a_section(gpu: ModuleType, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    figures = tmp_path / "figures.json"
    assert gpu.main(["--device", "cpu", "--size", "toy", "--models", "airbench", "--modes", "fp32,bf16+channels_last",
                     "--write", str(figures)]) == 0
    written = json.loads(figures.read_text())
    assert written["device"].startswith("CPU") and "--size toy" in written["command"]
    assert [(f["model"], f["modes"]) for f in written["figures"]] == [("airbench", "fp32"),
                                                                      ("airbench", "bf16+channels_last")]
    engine = written["figures"][1]["engine"]
    assert engine["engine_modes"]["engine_channels_last"] is True and engine["steps"] == 2
    assert "| airbench | bf16+channels_last |" in capsys.readouterr().out
    doc = tmp_path / "benchmarks.md"
    assert gpu.main(["--device", "cpu", "--size", "toy", "--models", "resnet18", "--modes", "fp32",
                     "--write", str(doc)]) == 0
    text = doc.read_text()
    assert "<!-- gpu-cpu:start -->" in text and "Engine vs a plain loop on CPU" in text and "| resnet18 |" in text


def test_gpu_bench_refuses_an_unknown_mode(gpu: ModuleType) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpu.parse_args(["--modes", "fp32,tf32"])
    assert exit_info.value.code == 2


def test_engine_speed_bench_runs_quick_on_digits(tmp_path: Path) -> None:
    speed = _bench("engine_speed")
    doc = tmp_path / "benchmarks.md"
    assert speed.main(["--dataset", "digits", "--model", "tiny_cnn", "--batch", "32", "--steps", "2", "--pairs",
                       "1", "--epochs", "1", "--seeds", "0", "--modes", "fp32,channels_last", "--fast-modes",
                       "channels_last", "--quick", "--write", str(doc)]) == 0
    text = doc.read_text()
    assert "<!-- engine-speed:start -->" in text and "| channels_last |" in text
    assert "its final loss equals the plain loop's" in text  # auto on CPU: the plain loop's arithmetic
