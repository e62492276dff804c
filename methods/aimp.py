"""Accelerated iterative magnitude pruning (catalogue T78: "Speeding-Up Pruning: Accelerated Iterative
Magnitude Pruning", building on Frankle and Carbin, ICLR 2019, and Renda, Frankle and Carbin, ICLR 2020).

Iterative magnitude pruning trains, prunes the smallest-magnitude weights, retrains, and repeats; AIMP
gives the intermediate iterations short training phases and only the last one the long phase. Here the
`rounds` pruning iterations fit in the run's one budget: the first `rounds` phases share
(1 - `final_fraction`) of the steps equally, the last phase gets `final_fraction`. Each phase ends by
pruning, globally over every conv/linear weight (or per layer, `scope`), to the next level of the
geometric schedule s_r = 1 - (1 - target)^(r / rounds), so each round removes the same fraction of what
is left; masks are re-applied after every optimiser step and kept in the checkpoint state.

Assumptions: weights continue from where the phase left them (Renda's learning-rate rewinding, not
Frankle and Carbin's weight rewinding), and the learning rate restarts each phase as a cyclic schedule:
a cosine from the tuned rate to 0 (the first phase warms up over its first 5%). Biases and normalisation
parameters are never pruned. `finalize` completes any round a too-short budget skipped, so the evaluated
model always has the target sparsity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from harness.data import ImageArrays
from harness.evaluation.efficiency import weight_layers
from harness.method import Claim, LRSchedule, Method, MethodConfig, MethodInfo, TrainContext, register_method
from harness.preconditions import PaperBaseline
from harness.search_space import FloatRange, IntRange

WARMUP_FRACTION = 0.05  # of the first phase


class AIMPConfig(MethodConfig):
    target_sparsity: float = Field(0.8, gt=0.0, lt=1.0, description="fraction of conv/linear weights pruned at the end")
    rounds: int = Field(3, ge=1, description="pruning iterations (the geometric schedule's steps)")
    final_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="share of the budget of the last, long phase")
    scope: Literal["global", "layer"] = Field("global", description="rank magnitudes over all layers or per layer")


def sparsity_schedule(target: float, rounds: int) -> list[float]:
    """s_1..s_R with s_r = 1 - (1 - target)^(r/R): each round prunes the same share of the surviving weights."""
    return [1.0 - (1.0 - target) ** (r / rounds) for r in range(1, rounds + 1)]


def phase_bounds(total_steps: int, rounds: int, final_fraction: float) -> list[int]:
    """Step at which each phase starts, then the total; the last phase is the long one."""
    short = total_steps * (1.0 - final_fraction) / rounds
    return [round(short * phase) for phase in range(rounds + 1)] + [total_steps]


def cyclic_cosine(step: int, bounds: list[int]) -> float:
    """A cosine from 1 to 0 over each phase (restarting at each bound), with a short warm-up in the first."""
    phase = max(p for p in range(len(bounds) - 1) if bounds[p] <= step or p == 0)
    start, stop = bounds[phase], bounds[phase + 1]
    progress = min(1.0, (step - start) / max(1, stop - start))
    warmup = max(1, round(WARMUP_FRACTION * (bounds[1] - bounds[0])))
    if phase == 0 and step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def magnitude_masks(weights: Mapping[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Boolean keep-masks leaving the largest-magnitude (1 - sparsity) share of the weights, over all or per layer."""
    if scope == "layer":
        return {name: magnitude_masks({name: weight}, sparsity, "global")[name] for name, weight in weights.items()}
    flat = torch.cat([weight.detach().abs().flatten() for weight in weights.values()])
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[flat.topk(round((1.0 - sparsity) * flat.numel())).indices] = True
    masks, offset = {}, 0
    for name, weight in weights.items():
        masks[name] = keep[offset: offset + weight.numel()].view_as(weight)
        offset += weight.numel()
    return masks


@register_method
class AcceleratedIMP(Method):
    """Short train-prune cycles on a geometric sparsity schedule, then one long phase at the target sparsity."""

    info = MethodInfo(
        name="aimp",
        summary="Accelerated iterative magnitude pruning: short intermediate train-prune cycles, a long last "
                "phase, geometric sparsity schedule, LR rewinding.",
        paper="Speeding-Up Pruning: Accelerated Iterative Magnitude Pruning (catalogue T78); Renda, Frankle, "
              "Carbin, Comparing Rewinding and Fine-tuning in Neural Network Pruning, ICLR 2020",
        cost_factor=1.0,  # the same budget; masking after each step is negligible
        claim=Claim("short intermediate iterations cut pruning time by over 50% with comparable final performance; "
                    "here: at the target sparsity, within 1 pp of the dense tuned erm", kind="no_worse",
                    margin=0.01,
                    preconditions=(PaperBaseline("imp", "iterative magnitude pruning with full-length rounds"),)),
    )
    Config = AIMPConfig
    search_space = {"final_fraction": FloatRange(low=0.3, high=0.8), "rounds": IntRange(low=2, high=5)}

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__(config)
        self.masks: dict[str, torch.Tensor] = {}
        self.pruned_rounds = 0

    def lr_schedule(self, default: LRSchedule, ctx: TrainContext) -> LRSchedule:
        bounds = phase_bounds(ctx.total_steps, self.config.rounds, self.config.final_fraction)
        return lambda step: cyclic_cosine(step, bounds)

    def prune(self, model: nn.Module, rounds_done: int) -> None:
        """Prune to the sparsity level after `rounds_done` rounds (the current masks' zeros stay zero)."""
        cfg = self.config
        level = sparsity_schedule(cfg.target_sparsity, cfg.rounds)[rounds_done - 1]
        self.apply_masks(model)
        weights = {name: module.weight for name, module in weight_layers(model)}
        self.masks = magnitude_masks(weights, level, cfg.scope)
        self.pruned_rounds = rounds_done
        self.apply_masks(model)

    def apply_masks(self, model: nn.Module) -> None:
        for name, module in weight_layers(model):
            if name in self.masks:
                module.weight.mul_(self.masks[name].to(module.weight.device))

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        bounds = phase_bounds(ctx.total_steps, self.config.rounds, self.config.final_fraction)
        while self.pruned_rounds < self.config.rounds and ctx.step + 1 >= bounds[self.pruned_rounds + 1]:
            self.prune(model, self.pruned_rounds + 1)
        self.apply_masks(model)

    def finalize(self, model: nn.Module, data: ImageArrays, ctx: TrainContext) -> nn.Module:
        with torch.no_grad():
            for rounds_done in range(self.pruned_rounds + 1, self.config.rounds + 1):
                self.prune(model, rounds_done)
            self.apply_masks(model)
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {name: mask.cpu().clone() for name, mask in self.masks.items()},
                "pruned_rounds": self.pruned_rounds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.masks = dict(state.get("masks", {}))
        self.pruned_rounds = int(state.get("pruned_rounds", 0))
