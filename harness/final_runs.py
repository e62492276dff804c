"""The one module that talks to Ray Train: final runs, and tuning trials of several workers, are `TorchTrainer` fits.

Each final run retrains the frozen best config for one seed on the full training split with
`workers` data-parallel workers (DDP over gloo on CPU, NCCL on GPU, global batch split across
workers), then rank 0 evaluates on test. `fit_final` is one run in one fit: rank 0 reports the
metrics inside a checkpoint, which is how they travel back to the driver whatever the storage.

`fit_final_group` trains a group of runs in one fit, one after another, so the worker group starts
(controller, worker actors, torch/gloo context: most of a run's fixed cost) once per group. Each run
is exactly what `fit_final` would train (the same `jobs.final_run`, seeding, data and arithmetic).
Resume, and the one checkpoint stream that makes it correct: Ray Train keeps one latest checkpoint
per fit, so every checkpoint the group reports holds the whole group's progress in `GROUP_FILE`
(each finished run's metrics by run name, and which run, if any, is under way) and, mid-run, that
run's engine state in `STATE_FILE`. A restarted worker group reads the latest one: it skips the
finished runs and continues the interrupted run from its own engine state, so a killed run resumes
from its own checkpoint (bit-identical on CPU) and no other run's metrics change. As each run
finishes, rank 0 hands its metrics to the driver's inbox (an actor, `open_inbox`) before reporting
it finished, so its row lands at once; a restart that repeats a run only repeats a message the
driver already has. A group's runs may be of different cells (`harness.scheduling.balanced_groups`); the
next run is the interrupted one, else the first whose teacher is ready, and a teacher's weights are
fetched when its run starts, so a slot trains other runs while a teacher is still training. A run that
raises fails the fit: rank 0 told the inbox which run it started, so the driver stores that one as
failed and starts the group's remaining runs as a new group (see `harness.final_groups`).

A tuning trial with `tuning.workers` > 1 calls `fit_tuning_trial` from inside its Tune trial (the
Ray Train V2 pattern: a Tune function builds and fits the trainer). `TuneReportCallback` forwards
rank 0's report of every epoch to Tune, so ASHA and the searcher see the trial as if it trained in place.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from harness.engine import Checkpointing
from harness.jobs import RunSpec, final_run, tuning_trial
from harness.provenance import hardware, node_id
from harness.rows import error_text
from harness.scheduling import next_in_group
from harness.storage import Storage

METRICS_FILE = "metrics.json"
PLACEMENT_GROUP_KEY = "train_placement_group"  # reported by multi-worker trials, so the driver can clean up
STATE_FILE = "engine_state.pt"
GROUP_FILE = "group_progress.json"  # a group's finished runs (with metrics) and the run under way


@dataclass(frozen=True)
class Workers:
    """How one fit is spread: `count` data-parallel workers of `cpus` CPUs and `gpus` GPUs each."""

    count: int = 1
    cpus: float = 1.0
    gpus: float = 0.0  # a fraction only with one worker: DDP ranks cannot share a GPU

    @property
    def use_gpu(self) -> bool:
        return self.gpus > 0

    @property
    def threads(self) -> int:
        """torch threads per worker: one per whole CPU it holds."""
        return max(1, int(self.cpus))

    def scaling_config(self) -> ScalingConfig:
        resources = {"CPU": self.cpus, **({"GPU": self.gpus} if self.use_gpu else {})}
        return ScalingConfig(num_workers=self.count, use_gpu=self.use_gpu, resources_per_worker=resources)

    def torch_config(self) -> TorchConfig:
        """NCCL between GPU workers, gloo between CPU workers."""
        return TorchConfig(backend="nccl" if self.use_gpu else "gloo")


def trainer(loop: Any, config: dict[str, Any], workers: Workers, run_config: RunConfig) -> TorchTrainer:
    """The `TorchTrainer` for `loop` on `workers`: the one place a scaling and a torch config are built."""
    return TorchTrainer(loop, train_loop_config=config, scaling_config=workers.scaling_config(),
                        torch_config=workers.torch_config(), run_config=run_config)


def _final_metrics(spec: RunSpec, teacher_state: bytes | None, checkpointing: Checkpointing | None) -> dict[str, Any]:
    """One final run on this worker, with what every final row records about where it ran."""
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    wrap = ray.train.torch.prepare_model if world_size > 1 else None
    metrics = final_run(spec, teacher_state, rank=rank, world_size=world_size,
                        device=ray.train.torch.get_device(), wrap_model=wrap, checkpointing=checkpointing)
    metrics.update(node_id=node_id(), hardware=hardware(), world_size=world_size)
    return metrics


def _train_loop(config: dict[str, Any]) -> None:
    rank = ray.train.get_context().get_world_rank()
    every = config["checkpoint_every"]
    metrics = _final_metrics(config["spec"], config["teacher_state"],
                             _checkpointing(every, rank, _latest_state() if every > 0 else None))
    if rank != 0:
        ray.train.report({})
        return
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, METRICS_FILE).write_text(json.dumps(metrics))
        ray.train.report({"done": 1}, checkpoint=Checkpoint.from_directory(directory))


def _latest_state() -> dict[str, Any] | None:
    """The engine state in Train's latest checkpoint, if it holds one."""
    latest = ray.train.get_checkpoint()
    if latest is None:
        return None
    with latest.as_directory() as directory:
        path = Path(directory, STATE_FILE)
        return torch.load(path, weights_only=False) if path.exists() else None


def _checkpointing(every_epochs: int, rank: int, resume: dict[str, Any] | None,
                   progress: dict[str, Any] | None = None) -> Checkpointing | None:
    """Engine checkpoints as Ray Train checkpoints: rank 0 uploads the state (with a group's `progress`
    beside it), every rank reports (as Train requires), and a restarted worker group continues from the
    latest one."""
    if every_epochs <= 0:
        return None

    def save(state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0:
                torch.save(state, Path(directory, STATE_FILE))
                if progress is not None:
                    Path(directory, GROUP_FILE).write_text(json.dumps(progress))
            checkpoint = Checkpoint.from_directory(directory) if rank == 0 else None
            ray.train.report({"epoch": state["epoch"]}, checkpoint=checkpoint)

    return Checkpointing(every_epochs=every_epochs, save=save, resume=resume)


def fit_final(spec: RunSpec, teacher_state: bytes | None, *, storage: Storage, name: str,
              workers: Workers | None = None, checkpoint_every: int = 0, max_failures: int = 0) -> dict[str, Any]:
    """Run one final run through `TorchTrainer(...).fit()`; return the metrics rank 0 reported.

    Checkpoints go to `storage`/`name`. A worker that dies is restarted up to `max_failures` times,
    from the last engine checkpoint (saved every `checkpoint_every` epochs; 0 saves none, so a restart
    begins again)."""
    storage.remove(name)  # an earlier attempt of this exact run that did not finish: start it afresh
    fit = trainer(_train_loop, {"spec": spec, "teacher_state": teacher_state, "checkpoint_every": checkpoint_every},
                  workers or Workers(), RunConfig(name=name, failure_config=FailureConfig(max_failures=max_failures),
                                     checkpoint_config=CheckpointConfig(num_to_keep=2), **storage.ray_storage()))
    result = fit.fit()
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"final run {name} finished without reporting metrics")
    with result.checkpoint.as_directory() as directory:
        return json.loads(Path(directory, METRICS_FILE).read_text())


@dataclass(frozen=True)
class GroupRun:
    """One run of a group: its `name` (unique in the group, as its row id is in the store), what it
    trains, and its teacher: weights, the ObjectRef of the task training them, or None."""

    name: str
    spec: RunSpec
    teacher: Any = None


@dataclass(frozen=True)
class GroupProgress:
    """What a group's latest checkpoint says: finished runs' metrics by name, runs that could not train
    (their teacher failed) with the error, the run under way (if any) and its engine state."""

    finished: dict[str, dict[str, Any]]
    current: str | None = None
    state: dict[str, Any] | None = None
    failed: dict[str, str] = field(default_factory=dict)

    def saved(self, current: str | None) -> dict[str, Any]:
        """The `GROUP_FILE` contents with `current` under way."""
        return {"finished": self.finished, "current": current, "failed": self.failed}

    def done(self, name: str) -> bool:
        return name in self.finished or name in self.failed


def _group_progress() -> GroupProgress:
    latest = ray.train.get_checkpoint()
    if latest is None:
        return GroupProgress(finished={})
    with latest.as_directory() as directory:
        saved = json.loads(Path(directory, GROUP_FILE).read_text())
        path = Path(directory, STATE_FILE)
        state = torch.load(path, weights_only=False) if path.exists() else None
    return GroupProgress(finished=saved["finished"], current=saved["current"], state=state,
                         failed=saved.get("failed", {}))


def _report_progress(progress: GroupProgress, rank: int) -> None:
    """Every rank reports a checkpoint holding `progress` with no run under way (rank 0 uploads it)."""
    with tempfile.TemporaryDirectory() as directory:
        if rank == 0:
            Path(directory, GROUP_FILE).write_text(json.dumps(progress.saved(None)))
        ray.train.report({"finished": len(progress.finished)},
                         checkpoint=Checkpoint.from_directory(directory) if rank == 0 else None)


def _next_run(pending: list[str], current: str | None, runs: dict[str, GroupRun]) -> str:
    """The run to train next (`harness.scheduling.next_in_group`), waiting for the first teacher to be
    ready when every pending run still waits for one."""
    def ready(name: str) -> bool:
        teacher = runs[name].teacher
        return not isinstance(teacher, ray.ObjectRef) or bool(ray.wait([teacher], timeout=0)[0])

    while (name := next_in_group(pending, current, ready)) is None:
        ray.wait([runs[waiting].teacher for waiting in pending], num_returns=1)
    return name


def _agreed_run(pending: list[str], current: str | None, runs: dict[str, GroupRun], world_size: int) -> str:
    """Rank 0 picks the next run (`_next_run`) and every rank trains that one: teachers may become ready
    at different moments on different workers, and DDP ranks must train the same run together."""
    rank = ray.train.get_context().get_world_rank()
    chosen = [_next_run(pending, current, runs) if rank == 0 else None]
    if world_size > 1:
        torch.distributed.broadcast_object_list(chosen, src=0, device=ray.train.torch.get_device())
    assert chosen[0] is not None
    return chosen[0]


def _teacher_weights(teacher: Any) -> tuple[bytes | None, str | None]:
    """(the teacher's weights, None), or (None, its task's error) when it failed to train."""
    if not isinstance(teacher, ray.ObjectRef):
        return teacher, None
    try:
        return ray.get(teacher), None
    except Exception as error:
        return None, error_text(error)


def _group_train_loop(config: dict[str, Any]) -> None:
    """Every worker trains the group's runs, skipping those the latest checkpoint holds as done: the
    interrupted run first, then each time the first run whose teacher is ready, its teacher's weights
    fetched only then. Rank 0 tells the inbox when a run starts and hands it the run's metrics when it
    finishes; then every rank reports it finished. A run whose teacher failed is handed to the inbox as
    failed (with the teacher's error), recorded so a restart skips it, and the group goes on."""
    context = ray.train.get_context()
    rank, world_size, inbox = context.get_world_rank(), context.get_world_size(), config["inbox"]
    runs = {run.name: run for run in config["runs"]}
    progress = _group_progress()
    pending = [name for name in runs if not progress.done(name)]
    while pending:
        name = _agreed_run(pending, progress.current, runs, world_size)
        pending.remove(name)
        teacher, teacher_error = _teacher_weights(runs[name].teacher)
        if teacher_error is not None:
            if inbox is None:
                raise RuntimeError(f"the teacher of {name} failed to train: {teacher_error}")
            if rank == 0:
                ray.get(inbox.put.remote(name, None, teacher_error))
            progress = replace(progress, current=None, state=None, failed={**progress.failed, name: teacher_error})
            _report_progress(progress, rank)
            continue
        if rank == 0 and inbox is not None:
            ray.get(inbox.start.remote(name))
        resume = progress.state if progress.current == name else None
        checkpointing = _checkpointing(config["checkpoint_every"], rank, resume, progress.saved(name))
        # through JSON, as `fit_final`'s metrics travel: the driver gets the same values and types
        metrics = json.loads(json.dumps(_final_metrics(runs[name].spec, teacher, checkpointing)))
        if rank == 0 and inbox is not None:
            ray.get(inbox.put.remote(name, metrics, None))
        progress = replace(progress, current=None, state=None, finished={**progress.finished, name: metrics})
        _report_progress(progress, rank)


def fit_final_group(runs: list[GroupRun], *, storage: Storage, name: str, workers: Workers | None = None,
                    checkpoint_every: int = 0, max_failures: int = 0, inbox: Any = None) -> dict[str, dict[str, Any]]:
    """Train `runs` one after another in one `TorchTrainer(...).fit()`; return each finished run's metrics
    by name (with `inbox`, each is also handed to it the moment it finishes).

    Checkpoints go to `storage`/`name` (see the module docstring). A worker that dies is restarted up to
    `max_failures` times per run of the group (the budget is the group's, so one run may use more than
    its share), from the interrupted run's last engine checkpoint. A run that raises fails the fit. A run's
    teacher (an ObjectRef) is fetched when that run starts, so the runs needing none train meanwhile."""
    if not runs:
        return {}
    assert len({run.name for run in runs}) == len(runs), "run names must be unique within a group"
    storage.remove(name)  # an earlier attempt of this exact group that did not finish: start it afresh
    config = {"runs": runs, "checkpoint_every": checkpoint_every, "inbox": inbox}
    run_config = RunConfig(name=name, failure_config=FailureConfig(max_failures=max_failures * len(runs)),
                           checkpoint_config=CheckpointConfig(num_to_keep=2), **storage.ray_storage())
    result = trainer(_group_train_loop, config, workers or Workers(), run_config).fit()
    if result.error is not None:  # the run it stopped in fails; the driver restarts the group's others
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"final group {name} finished without reporting metrics")
    with result.checkpoint.as_directory() as directory:
        return json.loads(Path(directory, GROUP_FILE).read_text())["finished"]


class _Inbox:
    """Messages from running groups to the driver: (run name, metrics or None, error or None)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any] | None, str | None]] = []
        self.started: set[str] = set()

    def start(self, name: str) -> None:
        self.started.add(name)

    def started_runs(self) -> set[str]:
        return set(self.started)

    def put(self, name: str, metrics: dict[str, Any] | None, error: str | None) -> None:
        self.messages.append((name, metrics, error))

    def drain(self) -> list[tuple[str, dict[str, Any] | None, str | None]]:
        messages, self.messages = self.messages, []
        return messages


def open_inbox() -> Any:
    """A zero-CPU actor that running groups hand each finished run to; `drain_inbox` reads it."""
    return ray.remote(num_cpus=0)(_Inbox).remote()


def drain_inbox(inbox: Any) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """Every message handed in since the last drain, in the order they came."""
    return ray.get(inbox.drain.remote())


def started_runs(inbox: Any) -> set[str]:
    """The runs that any group told the inbox it started (whether or not they finished since)."""
    return ray.get(inbox.started_runs.remote())


def submit_final_group(runs: list[GroupRun], **kwargs: Any) -> Any:
    """Start `fit_final_group` as a zero-CPU Ray task (its workers hold the CPUs); returns an ObjectRef."""
    return ray.remote(num_cpus=0, max_retries=0)(fit_final_group).remote(runs, **kwargs)


def _tuning_loop(config: dict[str, Any]) -> None:
    """One worker of a multi-worker tuning trial: every rank trains its shard and reports every epoch
    (Train requires all ranks to report); Tune receives rank 0's report."""

    context = ray.train.get_context()
    world_size, where = context.get_world_size(), node_id()
    group = ray.get_runtime_context().get_placement_group_id() or ""

    def report(metrics: dict[str, Any]) -> None:
        ray.train.report({**metrics, "node_id": where, "tune/workers": float(world_size), PLACEMENT_GROUP_KEY: group})

    tuning_trial(config["spec"], report, config["teacher_state"], rank=context.get_world_rank(),
                 world_size=world_size, device=ray.train.torch.get_device(),
                 wrap_model=ray.train.torch.prepare_model if world_size > 1 else None)


def fit_tuning_trial(spec: RunSpec, teacher_state: bytes | None, *, storage: Storage, name: str,
                     workers: Workers) -> None:
    """Inside a Tune trial: train its config on `workers` through a `TorchTrainer`, reporting to Tune.

    The Tune trial itself only drives the fit (it holds no CPU); the trainer's workers hold the
    trial's resources. A failed fit raises, and the trial is stored as failed."""
    from ray.tune.integration.ray_train import TuneReportCallback

    fit = trainer(_tuning_loop, {"spec": spec, "teacher_state": teacher_state}, workers,
                  RunConfig(name=name, callbacks=[TuneReportCallback()], failure_config=FailureConfig(max_failures=0),
                            **storage.ray_storage()))
    result = fit.fit()
    if result.error is not None:
        raise result.error


def release_placement_group(group_id: str) -> bool:
    """Remove a tuning trial's worker placement group if it outlived its run; True if it had.

    When ASHA stops a multi-worker trial, Tune ends the trial's actor while its fit is running, and the
    Train controller dies with it. Ray Train's own cleaner then removes the workers' placement group,
    but it finds the cluster through the State API, which fails on a host running several Ray instances;
    a group left behind would hold its CPUs and GPUs, and the next trial would wait for them forever.
    """
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    if not group_id:
        return False
    group = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id)))
    if placement_group_table(group).get("state", "REMOVED") == "REMOVED":
        return False
    remove_placement_group(group)
    return True


def submit_final(spec: RunSpec, teacher_state: Any, **kwargs: Any) -> Any:
    """Start `fit_final` as a zero-CPU Ray task (its workers hold the CPUs); returns an ObjectRef."""
    return ray.remote(num_cpus=0, max_retries=0)(fit_final).remote(spec, teacher_state, **kwargs)
