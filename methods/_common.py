"""Pieces several method plugins share: the teacher's logits, distributions over the non-target classes,
and the abstain output with the deep gamblers loss. Defines functions only; registers no method.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from harness.method import TrainContext


def teacher_logits(ctx: TrainContext, images: torch.Tensor, method: str) -> torch.Tensor:
    """The frozen teacher's float32 logits for `images`; a clear error when the benchmark gave none."""
    if ctx.teacher is None:
        raise RuntimeError(f"{method} needs ctx.teacher; the benchmark must declare a teacher")
    with torch.no_grad():
        return ctx.teacher(images).float()


def drop_target_column(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B,K] -> [B,K-1]: every column except the label's, in class order."""
    keep = torch.ones_like(values, dtype=torch.bool).scatter_(1, labels.unsqueeze(1), False)
    return values[keep].view(values.shape[0], values.shape[1] - 1)


def non_target_log_softmax(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log of the distribution over the K-1 non-target classes alone (it sums to 1 without the target)."""
    return F.log_softmax(drop_target_column(logits, labels) / temperature, dim=1)


# ---------------------------------------------------------------- abstention (deep gamblers)


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last `nn.Linear` in module order: the classifier of every model in `harness.models`."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not found:
        raise ValueError("the model has no nn.Linear classifier to give an abstain output")
    return found[-1]


def add_abstain_output(model: nn.Module, num_classes: int) -> nn.Module:
    """Widen the classifier from K to K+1 outputs in place; the last is the abstention logit.

    The K class rows keep their weights; the new row gets the layer's default initialisation, as if
    the model had been built with K+1 outputs. This is the abstain convention of
    `harness.evaluation.selective` (K+1 logits, last = abstain).
    """
    name, head = _last_linear(model)
    if head.out_features != num_classes:
        raise ValueError(
            f"the last linear layer '{name}' has {head.out_features} outputs; expected the {num_classes} classes"
        )
    wider = nn.Linear(head.in_features, num_classes + 1, bias=head.bias is not None,
                      device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        wider.weight[:num_classes].copy_(head.weight)
        if head.bias is not None:
            wider.bias[:num_classes].copy_(head.bias)
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child_name, wider)
    return model


def check_payoff(payoff: float, num_classes: int) -> None:
    """Liu et al. require 1 < o <= K: with o > K betting on every class beats abstaining, so it never abstains."""
    if not 1.0 < payoff <= num_classes:
        raise ValueError(f"the gamblers' payoff o must lie in (1, {num_classes}] for {num_classes} classes, "
                         f"got {payoff}")


def gambler_loss(logits: torch.Tensor, targets: torch.Tensor, payoff: float, num_classes: int) -> torch.Tensor:
    """Deep gamblers loss -sum_i q_i log(p_i + p_abstain / o), mean over the batch.

    `targets` are class indices [B] or distributions q [B,K]; p is the softmax over all K+1 logits.
    A model with only K logits has no abstention mass and the loss is the cross-entropy.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    class_log_probs = log_probs[:, :num_classes]
    if logits.shape[1] == num_classes + 1:  # log(p_i + p_a / o), stably in log space
        class_log_probs = torch.logaddexp(class_log_probs, log_probs[:, num_classes:] - math.log(payoff))
    elif logits.shape[1] != num_classes:
        raise ValueError(f"expected {num_classes} or {num_classes + 1} logits, got {logits.shape[1]}")
    if targets.ndim == 1:
        return -class_log_probs.gather(1, targets.unsqueeze(1)).mean()
    return -(targets * class_log_probs).sum(dim=1).mean()


# ---------------------------------------------------------------- initialisation from the teacher


def copy_teacher_weights(model: nn.Module, ctx: TrainContext, method: str) -> nn.Module:
    """Load the trained teacher's parameters and buffers into `model` (same architecture) and return it.

    For the methods that fine-tune a pre-trained network: the harness's teacher is that network, so the
    benchmark must declare `teacher.model` equal to its `model`. The copy shares no storage with the
    teacher, which stays frozen; the model's parameters keep `requires_grad`.
    """
    if ctx.teacher is None:
        raise RuntimeError(f"{method} fine-tunes the benchmark's teacher; the benchmark must declare a teacher")
    source, target = ctx.teacher.state_dict(), model.state_dict()
    mismatched = sorted(set(source) ^ set(target))
    mismatched += sorted(k for k in set(source) & set(target) if source[k].shape != target[k].shape)
    if mismatched:
        raise ValueError(
            f"{method} starts from the teacher's weights, but the teacher ({type(ctx.teacher).__name__}) and the "
            f"model ({type(model).__name__}) differ in {len(mismatched)} tensors (e.g. {mismatched[:3]}): "
            f"declare the benchmark's teacher.model equal to its model ({ctx.teacher_model!r} "
            "is declared now)")
    model.load_state_dict(source)
    return model


# ---------------------------------------------------------------- side-effect-free extra forward passes


_NORM_LAYERS = (nn.modules.batchnorm._NormBase,)


@contextlib.contextmanager
def preserved_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Run forward passes that must not count towards the normalisation layers' running statistics.

    A method that scores or probes batches with an extra train-mode forward (hard-batch selection, a
    look-ahead step) would otherwise update BatchNorm's running mean and variance more often than ERM
    does; this restores them (and the batch counter) on exit.
    """
    saved = [(buffer, buffer.detach().clone()) for module in model.modules() if isinstance(module, _NORM_LAYERS)
             for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
