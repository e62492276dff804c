"""The one module that talks to Ray Train: final runs, and tuning trials of several workers, are `TorchTrainer` fits.

Each final run retrains the frozen best config for one seed on the full training split with
`workers` data-parallel workers (DDP over gloo on CPU, NCCL on GPU, global batch split across
workers), then rank 0 evaluates on test and reports the metrics inside a checkpoint, which is
how they travel back to the driver whatever the storage.

A tuning trial with `tuning.workers` > 1 calls `fit_tuning_trial` from inside its Tune trial (the
Ray Train V2 pattern: a Tune function builds and fits the trainer). `TuneReportCallback` forwards
rank 0's report of every epoch to Tune, so ASHA and the searcher see the trial as if it trained in place.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
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
from harness.storage import Storage

METRICS_FILE = "metrics.json"
PLACEMENT_GROUP_KEY = "train_placement_group"  # reported by multi-worker trials, so the driver can clean up
STATE_FILE = "engine_state.pt"


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


def _train_loop(config: dict[str, Any]) -> None:
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    wrap = ray.train.torch.prepare_model if world_size > 1 else None
    metrics = final_run(config["spec"], config["teacher_state"], rank=rank, world_size=world_size,
                        device=ray.train.torch.get_device(), wrap_model=wrap,
                        checkpointing=_checkpointing(config["checkpoint_every"], rank))
    if rank != 0:
        ray.train.report({})
        return
    metrics.update(node_id=node_id(), hardware=hardware(), world_size=world_size)
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, METRICS_FILE).write_text(json.dumps(metrics))
        ray.train.report({"done": 1}, checkpoint=Checkpoint.from_directory(directory))


def _checkpointing(every_epochs: int, rank: int) -> Checkpointing | None:
    """Engine checkpoints as Ray Train checkpoints: rank 0 uploads the state, every rank reports (as
    Train requires), and a restarted worker group continues from the latest one."""
    if every_epochs <= 0:
        return None
    latest = ray.train.get_checkpoint()
    resume = None
    if latest is not None:
        with latest.as_directory() as directory:
            resume = torch.load(Path(directory, STATE_FILE), weights_only=False)

    def save(state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            if rank == 0:
                torch.save(state, Path(directory, STATE_FILE))
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
