"""The method plugin contract: what a training method declares and the hooks the engine calls.

A method computes its loss (and, if it must, changes the model); the engine owns the loop,
optimiser, devices, precision, Ray and timing. The base class *is* the plain ERM baseline, so a
method overrides only the hooks its paper changes. New context fields never break old plugins:
hooks receive one `TrainContext` object, not positional arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from harness.data.sources import UNLABELLED
from harness.plugins import discover_methods
from harness.preconditions import Precondition
from harness.registry import Registry
from harness.search_space import Dimension

if TYPE_CHECKING:
    from harness.data import ImageArrays
    from harness.train_settings import TrainSettings

Batch = tuple[torch.Tensor, torch.Tensor]  # (images in [0, 1], labels)
LRSchedule = Callable[[int], float]         # step -> learning-rate multiplier
ModelBuilder = Callable[[str | None], nn.Module]  # architecture name (None: the benchmark's) -> untrained model


def _no_model_builder(name: str | None = None) -> nn.Module:
    raise RuntimeError("this TrainContext has no build_model: the engine's caller (harness.jobs) provides it; "
                       "a test building a context by hand passes build_model=...")


PLAIN_BASELINE = "erm"  # the plain recipe: every claim's default baseline, and what `reference_accuracy` is about


@dataclass(frozen=True)
class Claim:
    """What the paper says the method buys, in a form the harness can check against a tuned baseline.

    `better`: the method beats `baseline` on `metric` (the paired 95% interval over seeds excludes zero
    on the good side). `no_worse`: it loses at most `margin` on `metric` (a compression method that keeps
    accuracy, while its cost columns show the saving). The baseline is `erm` unless the paper measured
    itself against another method (xAT against additive AT): then that method, run in the same suite.
    `harness.claims` judges it and `dashboards.claims` renders the verdicts. `preconditions` are the
    conditions the paper's claim needs (a teacher well above the student, a large batch, ...): a run that
    lacks one leaves the claim "not tested", naming it.
    """

    text: str                                   # the paper's claim, as the catalogue states it
    metric: str = "test/accuracy"               # the result-row column the claim is about
    kind: Literal["better", "no_worse"] = "better"
    margin: float = 0.0                         # for no_worse: the largest loss still in line with the claim
    baseline: str = PLAIN_BASELINE              # the registered method the claim is measured against
    preconditions: tuple[Precondition, ...] = ()  # what the claim needs of the run (`harness.preconditions`)


Need = Literal["teacher", "task_stream", "unlabelled"]
"""What a method can require of every benchmark it runs on; the suite check rejects a benchmark without it:
`teacher`: a declared teacher, which the harness trains and passes as `ctx.teacher` (`benchmarks[i].teacher`);
`task_stream`: a class-incremental task stream, `ctx.task` and friends (`benchmarks[i].scenario.continual`);
`unlabelled`: a training split whose labels are mostly hidden (`benchmarks[i].scenario.few_labels`)."""


@dataclass(frozen=True)
class MethodInfo:
    """Who a method is, and what it needs from the harness."""

    name: str
    summary: str
    paper: str = ""
    needs: tuple[Need, ...] = ()  # what every benchmark must provide (checked when the suite loads)
    modifies_model: bool = False  # `prepare_model` changes the architecture
    stochastic: bool = False      # predictions are random at test time (attacks must use EOT)
    cost_factor: float = 1.0      # rough cost per step relative to ERM: a scheduling hint only (costly cells
    #                               start first); the run's FLOPs are counted from the passes that ran
    claim: Claim | None = None    # what its paper claims, re-tested in docs/claims.md

    @property
    def needs_teacher(self) -> bool:
        """The harness trains the benchmark's teacher for it and passes it as `ctx.teacher`."""
        return "teacher" in self.needs


class MethodConfig(BaseModel):
    """Base of every method's hyper-parameters: frozen, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class TrainContext:
    """What a hook may know about the run. Read-only; the engine adds fields, never removes them.

    The model view, one rule for every hook: a hook's `model` argument is the plain model (never a
    DistributedDataParallel wrapper): read its layers, copy it, change it, run side passes on it. The one
    exception is `training_loss`, whose `model` is the training forward: call it for the passes whose
    gradients train the model (under data parallelism it is the wrapper, which averages them across
    workers); there, `ctx.model` is the plain model for everything else.
    """

    step: int
    total_steps: int
    epoch: int
    num_classes: int
    device: torch.device
    teacher: nn.Module | None = None     # the trained, frozen teacher, when the method needs one
    generator: torch.Generator | None = None  # the engine's data-order generator (draw from it, never reseed it)
    task: int = 0                        # the current task of a task stream (continual learning); else 0
    num_tasks: int = 1
    task_classes: tuple[int, ...] = ()   # the classes of the current task; () when there is no task stream
    seen_classes: tuple[int, ...] = ()   # the classes of every task so far, the current one included
    # -- the run, fixed from prepare_model to finalize (harness.jobs fills them in)
    seed: int = 0                        # the run's seed (the engine seeds torch and `generator` with it)
    num_samples: int = 0                 # training examples of the run (all tasks together)
    input_shape: tuple[int, int, int] | None = None  # (channels, height, width) of the benchmark's images
    teacher_model: str | None = None     # the architecture name of the benchmark's teacher, if it declares one
    build_model: ModelBuilder = _no_model_builder  # a fresh untrained model: build_model(None) is the benchmark's
    # -- the step (set by the engine while training)
    model: nn.Module | None = None       # the plain model being trained; None before training starts
    unaugmented: torch.Tensor | None = None  # the trained batch's images before the benchmark's augmentation
    # (when select_batch returned one of its candidates, as the default does; else None)

    def unaugmented_images(self, images: torch.Tensor) -> torch.Tensor:
        """`training_loss`'s `images` as they were before augmentation: `ctx.unaugmented`, which the engine
        sets (without one, a batch select_batch built or a context built by hand: `images` themselves)."""
        return self.unaugmented if self.unaugmented is not None else images

    def plain_model(self, forward: nn.Module) -> nn.Module:
        """The plain model behind `training_loss`'s `forward` argument: `ctx.model`, which the engine sets
        (a context built by hand without one, as in a unit test: `forward` itself)."""
        return self.model if self.model is not None else forward

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return self.step / max(1, self.total_steps)


@dataclass
class LossOutput:
    """The loss to minimise plus named parts to log (detached by the engine)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None  # the clean-input logits, when the method computed them


class Method:
    """Empirical risk minimisation: cross-entropy on the labels. Subclass and override hooks."""

    info: ClassVar[MethodInfo]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    search_space: ClassVar[Mapping[str, Dimension]] = {}

    def __init__(self, config: MethodConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    # ---------------------------------------------------------------- before training

    def adjust_settings(self, settings: TrainSettings, ctx: TrainContext) -> TrainSettings:
        """Change the engine's settings for this method's regime (batch size, steps, lr) with
        `settings.replace(...)`, which validates the result; default: unchanged.

        For a method whose paper prescribes a training regime (ghost batch norm's update-matched large
        batches); the run records what the engine actually did, so the cost stays visible. `ctx` is the
        run's context before training (`ctx.total_steps` counts the unadjusted settings' steps).
        """
        return settings

    def prepare_model(self, model: nn.Module, ctx: TrainContext) -> nn.Module:
        """Change the architecture or the initial weights before training (default: unchanged).

        `ctx.teacher` is the trained teacher, if the method declared one (initialise from it);
        `ctx.build_model(None)` builds a fresh, untrained model of the benchmark's architecture, or of
        the named one (an online peer or teacher: `ctx.teacher_model` names the benchmark's). Compute
        spent here (a pre-training) is counted in the run's training FLOPs like the loop's.
        """
        return model

    def auxiliary_modules(self, ctx: TrainContext) -> Sequence[nn.Module]:
        """Modules the engine trains with the model but never evaluates (an online teacher, a peer).

        The engine moves them to the device, adds their parameters to the optimiser, averages their
        gradients across workers and saves them in checkpoints. Build them in `prepare_model`.
        """
        return ()

    def lr_schedule(self, default: LRSchedule, ctx: TrainContext) -> LRSchedule:
        """The learning-rate multiplier per step over `ctx.total_steps` (default: the engine's warm-up +
        cosine, unchanged); built once, before the first step."""
        return default

    # ---------------------------------------------------------------- each step

    def candidate_batches(self, ctx: TrainContext) -> int:
        """How many data-loader batches the engine draws per step; `select_batch` picks what to train on."""
        return 1

    def select_batch(self, model: nn.Module, candidates: Sequence[Batch], ctx: TrainContext) -> Batch:
        """The batch to train on this step, from `candidate_batches()` candidates (default: the first)."""
        return candidates[0]

    def training_loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, ctx: TrainContext
    ) -> LossOutput:
        """The loss for one batch of augmented images in [0, 1] (default: cross-entropy)."""
        logits = model(images)
        return LossOutput(labelled_cross_entropy(logits, labels), logits=logits)

    def after_step(self, model: nn.Module, ctx: TrainContext) -> None:
        """Runs after every optimiser step, without gradients (an EMA update, re-applying a pruning mask)."""

    # ---------------------------------------------------------------- task streams and the end

    def on_task_end(self, model: nn.Module, ctx: TrainContext) -> None:
        """Runs when the task `ctx.task` of a task stream ends, before the next starts (no gradients)."""

    def finalize(self, model: nn.Module, data: ImageArrays, ctx: TrainContext) -> nn.Module:
        """The model to evaluate, after training: a post-training stage (prune, quantise, swap in an EMA).

        `data` is the run's training split (for calibration). Default: the trained model, unchanged.
        Efficiency metrics (parameters, FLOPs, latency) are measured on what this returns.
        """
        return model

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Method state a checkpoint must keep (a replay buffer, an EMA copy, masks); tensors on CPU."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned, when a run resumes from a checkpoint."""


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled images of the batch; 0 (with a gradient path) if none are.

    Images with label `UNLABELLED` (a few-labels scenario) are skipped, so supervised methods use only
    the labels they are given, and a batch without any gives no signal instead of NaN. No host sync.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=UNLABELLED, reduction="sum")
    return total / (labels != UNLABELLED).sum().clamp(min=1)


MethodFactory = Callable[..., Method]
METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass to the registry under `cls.info.name`."""
    METHODS.add(cls.info.name, cls)
    return cls


def build_method(name: str, overrides: Mapping[str, Any] | None = None) -> Method:
    """Instantiate a registered method with its config defaults updated by `overrides`."""

    discover_methods()  # a fresh Ray worker has imported no plugin yet
    cls = METHODS.get(name)
    return cls(cls.Config(**dict(overrides or {})))
