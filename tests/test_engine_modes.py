"""The engine's speed modes (`train.speed`): which modes a device picks, that `auto` keeps a CPU run's
arithmetic bit for bit, that each mode is deterministic on CPU, that a mode that cannot run falls back and
says so on the row, and that suites which set no mode keep their hash."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

import harness.engine_modes as engine_modes
from harness.data import ImageArrays, load_split
from harness.data.tasks import TaskStream
from harness.engine import _on_device, train
from harness.engine_modes import AUTO_COMPILE_MIN_STEPS, DeviceSupport, EngineModes, resolve_modes
from harness.jobs import RunSpec, final_run
from harness.method import Method
from harness.models import build_model
from harness.rows import check_row
from harness.suite import BenchmarkSpec, MethodEntry, load_suite
from harness.train_settings import Budget, SpeedSpec, TrainSettings, TrainSpec

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
EVERYTHING = DeviceSupport(bf16=True, compile=True)


def test_auto_on_cpu_picks_nothing_that_changes_the_arithmetic() -> None:
    assert resolve_modes(SpeedSpec(), CPU, EVERYTHING, total_steps=10**6) == EngineModes()


def test_auto_on_cuda_picks_bf16_and_channels_last_and_compiles_only_long_runs() -> None:
    short = resolve_modes(SpeedSpec(), CUDA, EVERYTHING, total_steps=AUTO_COMPILE_MIN_STEPS - 1)
    long = resolve_modes(SpeedSpec(), CUDA, EVERYTHING, total_steps=AUTO_COMPILE_MIN_STEPS)
    assert short == EngineModes(bf16=True, channels_last=True, compile=False)
    assert long == EngineModes(bf16=True, channels_last=True, compile=True)


def test_auto_on_a_card_without_bf16_or_triton_trains_fp32_eager_without_calling_it_a_fallback() -> None:
    modes = resolve_modes(SpeedSpec(), CUDA, DeviceSupport(bf16=False, compile=False), total_steps=10**6)
    assert modes == EngineModes(channels_last=True)


def test_a_mode_asked_for_where_it_cannot_run_falls_back_and_says_why() -> None:
    speed = SpeedSpec(bf16="on", compile="on", channels_last="on")
    modes = resolve_modes(speed, CPU, DeviceSupport(bf16=False, compile=False), total_steps=5)
    assert (modes.bf16, modes.compile, modes.channels_last) == (False, False, True)
    assert modes.columns()["engine_precision"] == "fp32"
    assert "no bf16 kernels" in modes.columns()["engine_fallbacks"]
    assert "no backend" in modes.columns()["engine_fallbacks"]
    assert resolve_modes(speed, CPU, EVERYTHING, total_steps=5) == EngineModes(bf16=True, channels_last=True,
                                                                              compile=True)


def test_off_turns_a_mode_off_on_cuda_too() -> None:
    speed = SpeedSpec(bf16="off", channels_last="off", compile="off")
    assert resolve_modes(speed, CUDA, EVERYTHING, total_steps=10**6) == EngineModes()


def test_yaml_booleans_read_as_on_and_off() -> None:
    assert SpeedSpec.model_validate({"bf16": True, "compile": False}) == SpeedSpec(bf16="on", compile="off")


def test_a_suite_without_speed_keeps_its_hash_and_one_with_it_gets_another() -> None:
    path = ROOT / "suites" / "smoke.yaml"
    plain = load_suite(path)
    assert "speed" not in plain.benchmarks[0].train.model_dump()
    assert load_suite(path, ["benchmarks[0].train.speed.bf16=auto"]).hash == plain.hash
    assert load_suite(path, ["benchmarks[0].train.speed.bf16=on"]).hash != plain.hash
    assert plain.hash == "09331c7018ce421f"  # the smoke suite's hash before `train.speed` existed


# ---------------------------------------------------------------- training in each mode, on CPU


def _digits() -> ImageArrays:
    return load_split("digits", "train")


def _train(speed: SpeedSpec, steps: int = 12) -> tuple[dict[str, torch.Tensor], float, float, dict]:
    torch.manual_seed(0)
    model = build_model("tiny_cnn", in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.25])
    settings = TrainSettings(lr=0.05, batch_size=32, steps=steps, seed=0, speed=speed)
    stats = train(model, Method(), _digits(), settings, num_classes=10, device=CPU)
    return ({k: v.clone() for k, v in model.state_dict().items()}, stats.last_loss, stats.flops,
            stats.engine_modes)


@functools.cache
def _default_run(steps: int = 12) -> tuple[dict[str, torch.Tensor], float, float, dict]:
    return _train(SpeedSpec(), steps)


def _same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(first[name], second[name]) for name in first)


def test_auto_trains_exactly_as_every_mode_off() -> None:
    auto, off = _default_run(), _train(SpeedSpec(bf16="off", channels_last="off", compile="off"))
    assert _same(auto[0], off[0]) and auto[1] == off[1]
    assert auto[3] == EngineModes().columns()
    changed = _train(SpeedSpec(channels_last="on"))  # the comparison can tell a different arithmetic apart
    assert not _same(auto[0], changed[0])


@pytest.mark.parametrize("speed", [SpeedSpec(bf16="on"), SpeedSpec(channels_last="on"),
                                   SpeedSpec(bf16="on", channels_last="on")], ids=["bf16", "channels_last", "both"])
def test_each_mode_is_deterministic_on_cpu_and_recorded(speed: SpeedSpec) -> None:
    if speed.bf16 == "on" and not DeviceSupport.probe(CPU).bf16:
        pytest.skip("this CPU has no bf16 kernels")
    first, second = _train(speed), _train(speed)
    assert _same(first[0], second[0]) and first[1] == second[1]
    assert first[3]["engine_precision"] == ("bf16" if speed.bf16 == "on" else "fp32")
    assert first[3]["engine_channels_last"] is (speed.channels_last == "on")
    assert not _same(first[0], _default_run()[0])  # the mode ran: other arithmetic than fp32 NCHW
    assert first[2] == _default_run()[2]  # the same passes ran: the same FLOPs


def test_a_channels_last_run_hands_back_a_model_in_the_usual_memory_format() -> None:
    torch.manual_seed(0)
    model = build_model("tiny_cnn", in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.25])
    train(model, Method(), _digits(), TrainSettings(lr=0.05, batch_size=32, steps=2, seed=0,
                                                     speed=SpeedSpec(channels_last="on")),
          num_classes=10, device=CPU)
    assert all(p.is_contiguous() for p in model.parameters())


def _raising_backend(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> None:
    raise RuntimeError("no compiler here")


def test_a_compile_that_fails_trains_eager_and_the_row_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_modes.torch, "compile", functools.partial(torch.compile, backend=_raising_backend))
    torch._dynamo.reset()
    failed, eager = _train(SpeedSpec(compile="on"), steps=4), _default_run(steps=4)
    assert _same(failed[0], eager[0]) and failed[2] == eager[2]
    assert failed[3]["engine_compile"] is False and "compile failed" in failed[3]["engine_fallbacks"]


def test_a_compiled_run_is_deterministic_counts_the_same_flops_and_compiles_once() -> None:
    torch._dynamo.reset()
    counts = torch._dynamo.utils.counters
    counts.clear()
    first = _train(SpeedSpec(compile="on"), steps=6)
    graphs = counts["stats"]["unique_graphs"]
    second = _train(SpeedSpec(compile="on"), steps=6)
    assert _same(first[0], second[0]) and first[1] == second[1]
    assert first[3]["engine_compile"] is True and first[3]["engine_fallbacks"] is None
    assert first[2] == _default_run(steps=6)[2]
    # the meter's per-step hooks must not make the graph recompile every step (dynamo gives up after 8)
    assert 1 <= graphs <= 2


def test_the_final_row_records_the_modes_it_trained_with() -> None:
    bench = BenchmarkSpec(name="digits", dataset="digits", model="tiny_cnn", budget=Budget(steps=3), augment=False,
                          train=TrainSpec(batch_size=64, speed=SpeedSpec(channels_last="on")), tune_val_size=100)
    metrics = final_run(RunSpec(benchmark=bench, method=MethodEntry(name="erm"), seed=0, metrics=("accuracy",)))
    assert (metrics["engine_precision"], metrics["engine_channels_last"], metrics["engine_compile"]) == (
        "fp32", True, False)
    check_row({"schema_version": 1, "row_id": "final:x:s0", "benchmark": "digits", "method": "erm", "seed": 0,
               "protocol": "holdout", "dataset": "digits", "scenario": None, "suite_name": "s", "suite_hash": "h",
               "git_commit": "c", "library_versions": "v", "driver_hardware": "cpu", "status": "ok", "error": None,
               "finished_at": "t", "phase": "final", "method_name": "erm", "primary_metric": "test/accuracy",
               "config_json": "{}", "config_hash": "h", "started_at": "t",
               **{k: v for k, v in metrics.items() if k.startswith("engine_") or "/" in k}})


def test_data_moved_to_the_training_device_once_stays_put_on_cpu() -> None:
    data = _digits()
    moved = _on_device(TaskStream((data,), ((),)), CPU)
    assert moved.tasks[0].images is data.images  # no copy where the data already is


def test_an_unknown_engine_modes_field_is_refused() -> None:
    with pytest.raises(ValueError, match="did you mean|Extra inputs"):
        SpeedSpec.model_validate({"channel_last": "on"})


def test_the_hot_path_reads_nothing_back_from_the_device_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU every read of a tensor's value on the host waits for the device: the loop reads a few values
    per epoch (its last loss), never per step (counted here on CPU, where the same calls would be the syncs)."""
    reads: list[str] = []
    for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _name: str = name, _original=original) -> object:
            reads.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.25])
    data = _digits()
    stats = train(model, Method(), data, TrainSettings(lr=0.05, batch_size=32, epochs=2, seed=0), num_classes=10,
                  device=CPU)
    # per epoch, the last loss and the epoch's order; 88 steps would be 88 reads and more
    assert stats.steps == 88 and reads.count("__float__") == 2 and len(reads) <= 4, reads
