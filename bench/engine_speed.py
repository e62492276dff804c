"""The engine's speed modes on this CPU: step rate against a plain eager fp32 loop, and accuracy at equal steps.

One run, on a benchmark model and its dataset (default `fast_cnn` on Fashion-MNIST, batch 256, 1 torch
thread, the quickstart's student):
  1. for each mode, a cold call (kernels, a compile) and then `--pairs` pairs of whole calls of `--steps`
     steps, (a) the plain eager fp32 loop and (b) `engine.train` in the mode, alternating which goes first;
     the ratio is the median over pairs of (b)/(a) step rates per CPU-second of this process (1 torch thread:
     the work done, which other processes' load changes far less than the wall clock; wall ratios beside);
  2. accuracy: `--epochs` epochs of the whole training split for each seed, plain fp32 loop against the
     engine in `--fast-modes`, then test accuracy: the step rate only counts at equal accuracy.

    python bench/engine_speed.py [--dataset fashion_mnist] [--model fast_cnn] [--steps 60] [--pairs 3]
        [--epochs 2] [--seeds 0,1] [--modes ...] [--fast-modes bf16+channels_last] [--quick] [--write FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from doc_sections import table, write_section
from speed_loops import Modes, Recipe, engine_train, plain_train
from torch import nn

from harness.data import ImageArrays, load_split
from harness.engine import accuracy
from harness.engine_modes import DeviceSupport
from harness.models import build_model

DEFAULT_MODES = "fp32,channels_last,bf16,bf16+channels_last,compile,bf16+channels_last+compile"
TARGET = 1.3


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Pairing:
    """One mode's paired whole-call timings against the plain fp32 loop."""

    modes: Modes
    cold_s: float  # the first engine call in this mode (holds its compile)
    plain_rates: list[float]  # steps per CPU-second of this process
    engine_rates: list[float]
    wall_ratios: list[float]  # (b)/(a) of steps per wall-second, pair by pair
    engine_record: dict
    plain_loss: float
    engine_loss: float

    @property
    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.plain_rates, self.engine_rates, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


@dataclass
class Accuracy:
    label: str
    seed: int
    test_accuracy: float
    wall_s: float
    cpu_s: float
    final_loss: float


def new_model(name: str, data: ImageArrays, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    channels, size = data.images.shape[1], data.images.shape[2]
    return build_model(name, in_channels=channels, num_classes=10, image_size=size, mean=[0.5] * channels,
                       std=[0.25] * channels)


def clock(call: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall seconds, CPU seconds of this process, and the call's result."""
    start, cpu = time.perf_counter(), time.process_time()
    result = call()
    return time.perf_counter() - start, time.process_time() - cpu, result


def pair_mode(modes: Modes, model_name: str, data: ImageArrays, recipe: Recipe, pairs: int) -> Pairing:
    """(a) plain fp32 eager against (b) the engine in `modes`, whole calls alternating a b / b a."""
    cpu = torch.device("cpu")
    torch._dynamo.reset()
    cold, _, _ = clock(lambda: engine_train(new_model(model_name, data), data, recipe, modes, cpu))
    rates: dict[str, list[float]] = {"a": [], "b": []}
    walls: dict[str, list[float]] = {"a": [], "b": []}
    record, losses = {}, {}
    for pair in range(pairs):
        for which in (("a", "b") if pair % 2 == 0 else ("b", "a")):
            if which == "a":
                wall, used, loss = clock(lambda: plain_train(new_model(model_name, data), data, recipe, Modes(), cpu))
            else:
                wall, used, (loss, record) = clock(lambda: engine_train(new_model(model_name, data), data, recipe,
                                                                        modes, cpu))
            rates[which].append(recipe.steps / used)
            walls[which].append(wall)
            losses[which] = loss
    wall_ratios = [a / b for a, b in zip(walls["a"], walls["b"], strict=True)]
    pairing = Pairing(modes, cold, rates["a"], rates["b"], wall_ratios, record, losses["a"], losses["b"])
    log(f"  {modes.label}: (b)/(a) per CPU-s {', '.join(f'{r:.3f}' for r in pairing.ratios)}; per wall-s "
        f"{', '.join(f'{r:.3f}' for r in wall_ratios)} (cold call {cold:.1f} s)")
    return pairing


def accuracy_runs(model_name: str, train: ImageArrays, test: ImageArrays, batch: int, epochs: int,
                  seeds: Sequence[int], fast: Modes) -> list[Accuracy]:
    """For each seed: the plain fp32 loop, then the engine in `fast`, `epochs` epochs each, then test accuracy."""
    cpu, results = torch.device("cpu"), []
    steps = epochs * (len(train) // batch)
    for seed in seeds:
        recipe = Recipe(batch_size=batch, steps=steps, seed=seed)
        for label in ("plain fp32 loop", f"engine, {fast.label}"):
            model = new_model(model_name, train, seed)
            if label.startswith("plain"):
                wall, used, loss = clock(lambda m=model, r=recipe: plain_train(m, train, r, Modes(), cpu))
            else:
                wall, used, (loss, _) = clock(lambda m=model, r=recipe: engine_train(m, train, r, fast, cpu))
            score = accuracy(model, test, device=cpu, num_classes=10)
            results.append(Accuracy(label, seed, score, wall, used, float(loss)))
            log(f"  seed {seed} {label}: test accuracy {score:.4f}, {wall:.1f} s wall, {used:.1f} CPU-s")
    return results


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = ", ".join(flag for flag in ("avx512_bf16", "amx_bf16") if f" {flag}" in flags) or "no bf16 instructions"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "isa": isa, "torch": torch.__version__,
            "python": platform.python_version()}


def report(options: argparse.Namespace, pairings: Sequence[Pairing], accuracies: Sequence[Accuracy],
           facts: dict[str, str], load: tuple[str, str], train_size: int) -> str:
    rows = [[p.modes.label, f"{statistics.median(p.plain_rates):.2f}", f"{statistics.median(p.engine_rates):.2f}",
             f"**{p.ratio:.3f}**", f"{min(p.ratios):.3f}-{max(p.ratios):.3f}", f"{statistics.median(p.wall_ratios):.3f}",
             f"{min(p.wall_ratios):.3f}-{max(p.wall_ratios):.3f}", f"{p.cold_s:.1f}",
             p.engine_record.get("engine_fallbacks") or ""] for p in pairings]
    speed = table(["Engine modes", "(a) plain fp32 steps/CPU-s", "(b) engine steps/CPU-s",
                   "(b)/(a) per CPU-s, median of pairs", "pairs range", "(b)/(a) per wall-s, median", "pairs range",
                   "cold first call, wall s", "fallback"], rows)
    by_label: dict[str, list[float]] = {}
    for result in accuracies:
        by_label.setdefault(result.label, []).append(result.test_accuracy)
    acc_rows = [[r.label, str(r.seed), f"{r.test_accuracy:.4f}", f"{r.final_loss:.4f}", f"{r.wall_s:.1f}",
                 f"{r.cpu_s:.1f}"] for r in accuracies]
    acc_rows += [[f"{label}: mean over seeds", "", f"{statistics.mean(scores):.4f}", "", "", ""]
                 for label, scores in by_label.items()]
    exact = next((p for p in pairings if p.modes == Modes()), None)
    notes = [note for note in (speed_note(pairings, accuracies, options.fast), default_note(exact),
                               noise_note(pairings), compile_note(pairings)) if note]
    return "\n".join([
        "## Engine speed modes on CPU (bench/engine_speed.py)", "",
        f"Reproduce: `{command(options)}`", "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {facts['cores']} cores ({facts['cpu']}; "
        f"{facts['isa']}), no GPU; Python {facts['python']}, torch {facts['torch']}, 1 torch thread; 1-minute load "
        f"average {load[0]} at the start, {load[1]} at the end (other processes share the machine: only ratios "
        "within this run mean anything).", "",
        f"`{options.model}` on {options.dataset} ({train_size} training images), batch {options.batch}, "
        f"SGD-Nesterov 0.9, lr 0.05, 5% warm-up then cosine, weight decay 5e-4, no augmentation. Step rates: "
        f"{options.pairs} pairs of whole {options.steps}-step calls per mode after one cold call, in steps per "
        "CPU-second of this process (one torch thread, so its CPU time is the work done; under load, the wall "
        "clock also counts the time other processes held the cores).", "",
        speed, "", f"Accuracy after {options.epochs} epoch(s), test split:", "",
        table(["Run", "Seed", "Test accuracy", "Final batch loss", "Wall s", "CPU s"], acc_rows), "", *notes, ""])


def speed_note(pairings: Sequence[Pairing], accuracies: Sequence[Accuracy], fast: Modes) -> str:
    """The verdict on the target: the accuracy runs' modes, their step-rate ratio and their accuracy."""
    timed = next((p for p in pairings if p.modes == fast), None)
    best = max(pairings, key=lambda p: p.ratio)
    text = (f"- **Target: >= {TARGET}x the plain eager loop's step rate at equal accuracy.** Fastest here: "
            f"`{best.modes.label}` at {best.ratio:.3f}.")
    if timed is None or not accuracies:
        return text + f" (`{fast.label}` was not both timed and trained for accuracy in this run: no verdict.)"
    plain = {r.seed: r.test_accuracy for r in accuracies if r.label.startswith("plain")}
    engine = {r.seed: r.test_accuracy for r in accuracies if not r.label.startswith("plain")}
    gaps = [engine[seed] - plain[seed] for seed in plain]
    verdict = "met" if timed.ratio >= TARGET else "missed"
    if timed.ratio < TARGET:
        every = f"the highest pair is {max(timed.ratios):.3f}"
    elif min(timed.ratios) >= TARGET:
        every = "every pair is above it"
    else:
        every = f"on the median, not in every pair: the lowest is {min(timed.ratios):.3f}"
    return text + (f" `{fast.label}`: step rate {timed.ratio:.3f} of the plain loop (pairs {min(timed.ratios):.3f}-"
                   f"{max(timed.ratios):.3f}), so the rate target is **{verdict}** ({every}); its test accuracy minus "
                   f"the plain loop's, seed by seed: {', '.join(f'{gap:+.4f}' for gap in gaps)} (mean "
                   f"{statistics.mean(gaps):+.4f} over {len(gaps)} seed(s), against a seed-to-seed spread of the plain "
                   f"loop of {max(plain.values()) - min(plain.values()):.4f}: a few seeds show whether the gap is of "
                   "that size, no more).")


def noise_note(pairings: Sequence[Pairing]) -> str | None:
    """What the run's noise is: fp32's pairs do the plain loop's arithmetic, so their spread is the machine's."""
    exact = next((p for p in pairings if p.modes == Modes()), None)
    if exact is None:
        return None
    return (f"- **Noise.** fp32 runs the plain loop's arithmetic (what the engine adds per step is microseconds: "
            f"bench/overhead.py), so its pairs, {min(exact.ratios):.3f}-{max(exact.ratios):.3f} per CPU-second and "
            f"{min(exact.wall_ratios):.3f}-{max(exact.wall_ratios):.3f} per wall-second, are this run's noise on a "
            "single pair; the medians carry less of it.")


def compile_note(pairings: Sequence[Pairing]) -> str | None:
    """Whether compiling adds anything over the same modes eager."""
    compiled = [p for p in pairings if p.modes.compile]
    by_modes = {p.modes: p for p in pairings}
    notes = []
    for p in compiled:
        eager = by_modes.get(Modes(bf16=p.modes.bf16, channels_last=p.modes.channels_last))
        if eager is not None:
            notes.append(f"`{p.modes.label}` {p.ratio:.3f} against `{eager.modes.label}` {eager.ratio:.3f} eager, "
                         f"for a cold first call of {p.cold_s:.1f} s against {eager.cold_s:.1f} s")
    if not notes:
        return None
    return ("- **Compile.** " + "; ".join(notes) + ". Where the two are within the noise above, compiling buys "
            "nothing on this model and costs its compile once per process.")


def default_note(exact: Pairing | None) -> str:
    text = ("- The default (`train.speed` unset, `auto`) on CPU is fp32, NCHW, eager: the plain loop's arithmetic, "
            "so rows keep their values")
    if exact is not None:
        same = "equals" if exact.engine_loss == exact.plain_loss else "differs from"
        text += (f"; here its final loss {same} the plain loop's ({exact.engine_loss:.6f} vs {exact.plain_loss:.6f}) "
                 f"and it runs at {exact.ratio:.3f} of its step rate")
    return text + (". Each mode changes a CPU run's numbers (bf16 rounds; channels_last and compile choose other "
                   "kernels and summation orders), so `auto` takes none of them on CPU and a suite opts in with "
                   "`train.speed`.")


def command(options: argparse.Namespace) -> str:
    text = (f"python bench/engine_speed.py --dataset {options.dataset} --model {options.model} --batch "
            f"{options.batch} --steps {options.steps} --pairs {options.pairs} --epochs {options.epochs} --seeds "
            f"{options.seeds} --modes {options.modes} --fast-modes {options.fast_modes}")
    return text + (" --quick" if options.quick else "") + (f" --write {options.write}" if options.write else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/engine_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--model", default="fast_cnn")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60, help="steps of each timed call")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each accuracy run (0: none)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--modes", default=DEFAULT_MODES)
    parser.add_argument("--fast-modes", default="bf16+channels_last", help="the modes the accuracy runs use")
    parser.add_argument("--quick", action="store_true", help="the first 512 training and test images: a smoke check")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE", help="e.g. docs/benchmarks.md")
    options = parser.parse_args(argv)
    try:
        options.parsed = [Modes.parse(text) for text in options.modes.split(",") if text]
        options.fast = Modes.parse(options.fast_modes)
        options.seed_list = [int(seed) for seed in options.seeds.split(",") if seed]
    except ValueError as error:
        parser.error(str(error))
    if options.steps < 1 or options.pairs < 1 or options.epochs < 0 or options.batch < 1:
        parser.error("--steps, --pairs and --batch must be positive, --epochs at least 0")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    torch.set_num_threads(1)
    train, test = load_split(options.dataset, "train"), load_split(options.dataset, "test")
    if options.quick:
        train, test = train.subset(torch.arange(min(512, len(train)))), test.subset(torch.arange(min(512, len(test))))
    if (options.fast.bf16 or any(m.bf16 for m in options.parsed)) and not DeviceSupport.probe(torch.device("cpu")).bf16:
        log("this CPU has no bf16 kernels: the engine falls back to fp32 in the bf16 modes (the fallback column)")
    load_start = f"{os.getloadavg()[0]:.2f}"
    recipe = Recipe(batch_size=options.batch, steps=options.steps)
    log(f"step rates, {options.pairs} pairs of {options.steps}-step calls per mode")
    pairings = [pair_mode(modes, options.model, train, recipe, options.pairs) for modes in options.parsed]
    log(f"accuracy, {options.epochs} epoch(s) per run")
    accuracies = accuracy_runs(options.model, train, test, options.batch, options.epochs, options.seed_list,
                               options.fast) if options.epochs else []
    section = report(options, pairings, accuracies, machine(), (load_start, f"{os.getloadavg()[0]:.2f}"), len(train))
    print(section)
    if options.write:
        write_section(options.write, section, "engine-speed")
        log(f"wrote the engine-speed section of {options.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
