"""The engine against a plain PyTorch loop on one device: ResNet-18 and an airbench-style net on
CIFAR-shaped random data (3x32x32, 10 classes), in each of the engine's speed modes.

For every model and mode it times (a) the plain loop in fp32 eager, (b) the plain loop with the mode
applied by hand and (c) `harness.engine.train` asking for the mode (`bench/speed_loops.py`), each after a
warm-up call (reported apart: it holds a compile), and prints steps/s with (c)/(a) and (c)/(b). Made to
run in one command on a lent GPU within a short time limit; `--size toy` runs on CPU in seconds (the test).

    python bench/gpu.py [--device auto|cpu|cuda] [--size toy|small|full] [--models resnet18,airbench]
                        [--modes fp32,bf16,channels_last,bf16+channels_last,bf16+channels_last+compile]
                        [--write docs/benchmarks.md | --write figures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from doc_sections import table, write_section
from speed_loops import Modes, Recipe, Timed, on_device, time_engine, time_plain
from torch import nn

from harness.data import ImageArrays
from harness.models import Normalize, ResNet, build_model

SIZES = {  # batch, timed steps, warm-up steps, random images, width divisor of the models
    "toy": (4, 2, 1, 16, 16),
    "small": (256, 30, 10, 8192, 1),
    "full": (512, 200, 30, 50000, 1),
}
CIFAR_MEAN, CIFAR_STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
DEFAULT_MODES = "fp32,bf16,channels_last,bf16+channels_last,bf16+channels_last+compile"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class AirbenchStyleNet(nn.Module):
    """The shape of Keller Jordan's airbench94 CIFAR-10 net: a 2x2 patch conv, then three blocks of
    conv, max-pool, BN, GELU, conv, BN, GELU (widths 64, 256, 256), max-pool and a scaled linear head.
    Not its whitening initialisation, optimiser or tricks: only the compute shape, to time."""

    def __init__(self, widths: Sequence[int] = (64, 256, 256), num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 24, 2, bias=True), nn.GELU()]
        cin = 24
        for width in widths:
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(width),
                       nn.GELU(), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.GELU()]
            cin = width
        self.features = nn.Sequential(*layers, nn.MaxPool2d(3), nn.Flatten())
        self.head = nn.Linear(cin, num_classes, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images)) / 9.0  # airbench scales its logits by 1/9


def make_model(name: str, divisor: int = 1) -> nn.Module:
    """The named net; `divisor` narrows every layer (toy size: the same code paths, a fraction of the work)."""
    torch.manual_seed(0)
    if name == "airbench":
        return AirbenchStyleNet(tuple(width // divisor for width in (64, 256, 256)))
    if name == "resnet18" and divisor > 1:
        net = ResNet(3, 10, tuple(width // divisor for width in (64, 128, 256, 512)), (2, 2, 2, 2))
        return nn.Sequential(Normalize(CIFAR_MEAN, CIFAR_STD), net)
    return build_model(name, in_channels=3, num_classes=10, image_size=32, mean=CIFAR_MEAN, std=CIFAR_STD)


def random_cifar(count: int, seed: int = 0) -> ImageArrays:
    generator = torch.Generator().manual_seed(seed)
    return ImageArrays(torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator),
                       torch.randint(0, 10, (count,), generator=generator))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads"


@dataclass
class Figure:
    model: str
    modes: str
    plain_fp32: Timed
    plain_mode: Timed
    engine: Timed

    @property
    def engine_vs_plain_fp32(self) -> float:
        return self.engine.steps_per_s / self.plain_fp32.steps_per_s

    @property
    def engine_vs_plain_mode(self) -> float:
        return self.engine.steps_per_s / self.plain_mode.steps_per_s


def measure(model_name: str, modes: Sequence[Modes], data: ImageArrays, recipe: Recipe, warmup: int,
            device: torch.device, divisor: int = 1) -> list[Figure]:
    """Each mode's three timings; the fp32 eager plain loop is timed once per model and shared."""
    model = make_model(model_name, divisor)
    log(f"{model_name}: plain fp32 eager")
    baseline = time_plain(model, data, recipe, Modes(), device, warmup)
    figures = []
    for mode in modes:
        log(f"{model_name}: {mode.label}")
        plain = baseline if mode == Modes() else time_plain(model, data, recipe, mode, device, warmup)
        engine = time_engine(model, data, recipe, mode, device, warmup)
        figures.append(Figure(model_name, mode.label, baseline, plain, engine))
        log(f"  plain {plain.steps_per_s:.2f} steps/s, engine {engine.steps_per_s:.2f} steps/s "
            f"(engine warm-up {engine.warmup_s:.1f} s)")
    return figures


def report_markdown(figures: Sequence[Figure], options: argparse.Namespace, device: torch.device,
                    recipe: Recipe, load: tuple[str, str]) -> str:
    rows = [[f.model, f.modes, f"{f.plain_fp32.steps_per_s:.2f}", f"{f.plain_mode.steps_per_s:.2f}",
             f"{f.engine.steps_per_s:.2f}", f"{f.engine_vs_plain_fp32:.2f}", f"{f.engine_vs_plain_mode:.2f}",
             f"{f.engine.warmup_s:.1f}", (f.engine.engine_modes or {}).get("engine_fallbacks") or ""]
            for f in figures]
    header = ["Model", "Modes", "(a) plain fp32 steps/s", "(b) plain, same modes", "(c) engine", "(c)/(a)",
              "(c)/(b)", "(c) warm-up s", "Fallback"]
    return "\n".join([
        f"## Engine vs a plain loop on {device_name(device)} (bench/gpu.py)", "",
        f"Reproduce: `{command(options)}`", "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {device_name(device)}; torch "
        f"{torch.__version__}; 1-minute load average {load[0]} at the start, {load[1]} at the end. Random "
        f"CIFAR-shaped data (3x32x32, 10 classes, {options.images} images on the device), batch "
        f"{recipe.batch_size}, models at 1/{options.divisor} of their widths; steps/s of {recipe.steps} steps, "
        f"timed as the difference of warm calls of {options.warmup} and {options.warmup + recipe.steps} steps "
        f"after a cold {options.warmup}-step call (its time, which holds any compile, is the warm-up column); "
        "SGD-Nesterov, warm-up-cosine, no augmentation. Random labels: this times steps, it measures no "
        "accuracy.", "",
        table(header, rows), ""])


def command(options: argparse.Namespace) -> str:
    text = f"python bench/gpu.py --device {options.device} --size {options.size} --models {options.models} " \
           f"--modes {options.modes}"
    return text + (f" --write {options.write}" if options.write else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/gpu.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--size", choices=sorted(SIZES), default="small",
                        help="toy: seconds on CPU (the test); small: a minute or two on a GPU; full: longer")
    parser.add_argument("--models", default="resnet18,airbench", help="comma-separated: resnet18, airbench, or "
                        "any harness model (resnet20, small_cnn, ...)")
    parser.add_argument("--modes", default=DEFAULT_MODES, help="comma-separated; each fp32 or modes joined by '+'")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE",
                        help="a .md file gets this device's section (docs/benchmarks.md); a .json file the figures")
    options = parser.parse_args(argv)
    try:
        options.parsed_modes = [Modes.parse(text) for text in options.modes.split(",") if text]
    except ValueError as error:
        parser.error(str(error))
    options.batch, options.steps, options.warmup, options.images, options.divisor = SIZES[options.size]
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if options.device == "auto"
                          else options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    recipe = Recipe(batch_size=options.batch, steps=options.steps)
    data = on_device(random_cifar(options.images), device)
    load_start = f"{os.getloadavg()[0]:.2f}"
    figures = [figure for name in options.models.split(",") if name
               for figure in measure(name, options.parsed_modes, data, recipe, options.warmup, device,
                                     options.divisor)]
    load = (load_start, f"{os.getloadavg()[0]:.2f}")
    section = report_markdown(figures, options, device, recipe, load)
    print(section)
    if options.write is not None and options.write.suffix == ".json":
        options.write.write_text(json.dumps({"device": device_name(device), "torch": torch.__version__,
                                             "command": command(options), "load_average": load,
                                             "figures": [asdict(f) for f in figures]}, indent=2) + "\n")
    elif options.write is not None:
        write_section(options.write, section, f"gpu-{device.type}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
