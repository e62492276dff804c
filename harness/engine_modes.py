"""The engine's speed modes for one run: which of bf16 autocast, channels_last and torch.compile it uses.

`resolve_modes` is a pure function of the suite's `train.speed`, the device and what that device supports,
so which modes a CUDA device would pick is tested on a CPU-only machine. `auto` on CPU keeps the plain
fp32 loop's arithmetic, bit for bit (bf16 rounds, and channels_last and compile pick other kernels with
other summation orders, so each changes a CPU run's numbers): a suite's rows stay what they were unless
it asks for a mode. On CUDA, `auto` takes bf16 (where the card has it) and channels_last, as the engine
always did there, and compiles runs long enough to repay the compile. A mode that is on but cannot run
falls back and says why, and `EngineModes.columns` records what ran on the run's row.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.train_settings import SpeedSpec

# Unmeasured guess until `bench/gpu.py` runs on a card: a compile costs tens of seconds once, and pays
# back a few milliseconds per step, so `auto` compiles only runs of at least this many steps.
AUTO_COMPILE_MIN_STEPS = 2000

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSupport:
    """What the device can do, probed once per run (a test passes its own to resolve for another device)."""

    bf16: bool
    compile: bool

    @classmethod
    def probe(cls, device: torch.device) -> DeviceSupport:
        """bf16: the CPU's oneDNN has bf16 kernels (AVX512-BF16/AMX), or the CUDA card computes in bf16;
        compile: torch.compile has a backend for the device (Inductor needs a C++ compiler on CPU, Triton
        on CUDA; a missing one shows only when compiling, and then the run falls back to eager)."""
        if device.type == "cuda":
            return cls(bf16=torch.cuda.is_bf16_supported(), compile=_has_triton())
        if device.type == "cpu":
            return cls(bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), compile=True)
        return cls(bf16=False, compile=False)


def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None  # found, not imported: only CUDA compiles need it


@dataclass(frozen=True)
class EngineModes:
    """The modes one run trains with, and why any that was asked for does not run."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    fallbacks: tuple[str, ...] = ()

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.bf16 else None

    def with_fallback(self, note: str, **off: bool) -> EngineModes:
        """These modes with the ones in `off` turned off, and `note` saying why."""
        return EngineModes(**{"bf16": self.bf16, "channels_last": self.channels_last, "compile": self.compile,
                              **off}, fallbacks=(*self.fallbacks, note))

    def columns(self) -> dict[str, Any]:
        """The row's record of what ran (`harness.rows`: `engine_precision`, `engine_channels_last`, ...)."""
        return {"engine_precision": "bf16" if self.bf16 else "fp32", "engine_channels_last": self.channels_last,
                "engine_compile": self.compile, "engine_fallbacks": "; ".join(self.fallbacks) or None}


def resolve_modes(speed: SpeedSpec, device: torch.device, support: DeviceSupport, total_steps: int) -> EngineModes:
    """The modes `speed` asks for on `device`: `auto` as the module docstring says, `on` where the device
    supports it (else off, with the reason in `fallbacks`), `off` off."""
    cuda = device.type == "cuda"
    modes = {"channels_last": speed.channels_last == "on" or (speed.channels_last == "auto" and cuda),
             "bf16": speed.bf16 == "auto" and cuda and support.bf16,
             "compile": speed.compile == "auto" and cuda and support.compile and total_steps >= AUTO_COMPILE_MIN_STEPS}
    fallbacks = []
    if speed.bf16 == "on":
        modes["bf16"] = support.bf16
        if not support.bf16:
            fallbacks.append(f"bf16 asked for, but this {device.type} has no bf16 kernels: trained in fp32")
    if speed.compile == "on":
        modes["compile"] = support.compile
        if not support.compile:
            fallbacks.append(f"compile asked for, but torch.compile has no backend for this {device.type}: "
                             "trained eager")
    return EngineModes(**modes, fallbacks=tuple(fallbacks))


class CompiledForward(nn.Module):
    """`torch.compile(model)` that falls back to `model` itself, for good, the first time compiling fails.

    `on_fallback` gets the reason, so the run's row can say it trained eager. A compile fails before its
    graph runs; only a forward split by a graph break can have run a part (and updated, say, batch-norm
    statistics of the layers before the break) when a later part fails to compile.

    The compiled call runs with torch's global module hooks set aside: `harness.compute` registers them
    for every step, and a compiled graph guards on them, so it would recompile every step and soon give
    up. The meter counts this module's call as one of the model it stands for (`counted_as`) instead."""

    def __init__(self, model: nn.Module, on_fallback: Callable[[str], None]) -> None:
        super().__init__()
        self.eager = model
        self.compiled = torch.compile(model)
        self.failed = False
        self._on_fallback = on_fallback

    @property
    def counted_as(self) -> nn.Module:
        """The plain model this forward runs (inside a DistributedDataParallel wrapper, the wrapped one)."""
        return getattr(self.eager, "module", self.eager)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            try:
                with _global_forward_hooks_set_aside():
                    return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as error:
                self.failed = True
                reason = f"compile failed ({type(error).__name__}: {str(error).strip().splitlines()[0][:200]}): trained eager"
                logger.warning(reason)
                self._on_fallback(reason)
        return self.eager(*args, **kwargs)


_GLOBAL_FORWARD_HOOKS = ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_always_called",
                         "_global_forward_hooks_with_kwargs")


@contextlib.contextmanager
def _global_forward_hooks_set_aside() -> Iterator[None]:
    """Empty torch's global module forward hooks for the block, then put the same hooks back."""
    tables = [getattr(torch.nn.modules.module, name) for name in _GLOBAL_FORWARD_HOOKS]
    saved = [dict(table) for table in tables]
    for table in tables:
        table.clear()
    try:
        yield
    finally:
        for table, entries in zip(tables, saved, strict=True):
            table.update(entries)
