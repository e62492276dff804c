"""Peers side by side: one suite's tuning job and final phase, run by the harness and by what a user would
otherwise write, timed in one run so the ratios compare like with like.

The tuning job (by default the quickstart's `erm` cell, 16 trials, FIFO: every trial runs its full budget) as
  (a) Optuna alone in one process: a plain PyTorch loop and `optuna` TPE with the suite's sampler seed,
  (b) a Ray Tune script written with Ray's defaults: `tune.Tuner` with `OptunaSearch`, default resources and
      actor reuse, the data loaded inside the trainable, Ray started by the Tuner itself,
  (c) the harness: `SuiteRunner.tune_all` of the suite cut to that one cell (with `ray.init`);
and the suite's final phase (every method x seed, its teachers included) as
  (c) the harness: `SuiteRunner.final_all`, against
  (d) the same runs (`harness.jobs.final_run`, `train_teacher`) one after another in this process.
Accuracies are printed beside the walls: (a)-(c) train the same configurations the same way, so where a
configuration is proposed by two of them its accuracy must agree.

    python bench/peers.py [--suite suites/quickstart.yaml] [--method erm] [--trials 16]
                          [--set KEY.PATH=VALUE ...] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from doc_sections import table, write_section
from overhead import Job, machine_facts, plain_train

from harness.data import DataAccess, DatasetInfo, ImageArrays
from harness.errors import HarnessInputError
from harness.jobs import TRAIN_PREFIX, RunSpec, final_run, train_teacher
from harness.plan import Cell, FinalJob, Seeds, cell_space, default_point, plan_suite
from harness.protocols import get_protocol
from harness.search_space import Choice, Dimension, FloatRange, IntRange
from harness.suite import Suite, SuiteError, apply_overrides, validate_suite

SECTION = "peers"
SECTION_TITLE = "## Peers side by side: Optuna, Ray Tune with its defaults, the harness (bench/peers.py)"
TARGETS = {"vs_optuna": 1.1, "vs_ray_defaults": 0.5, "final": 1.1}
SAME_CONFIG_DIGITS = 9  # configurations compared for equality at this many significant digits


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the result section."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the job


@dataclass(frozen=True)
class PeerSuites:
    """The tuning job (the suite cut to one cell, trials and FIFO set) and the whole suite for its final phase."""

    tuning: Suite
    final: Suite
    source: str

    @property
    def cell(self) -> Cell:
        return plan_suite(self.tuning).cells[0].cell

    @property
    def space(self) -> dict[str, Dimension]:
        return cell_space(self.tuning, self.cell)

    @property
    def seeds(self) -> Seeds:
        return Seeds.of(self.tuning)

    @property
    def epochs(self) -> int:
        budget = self.cell.tune_benchmark.tuning_budget or self.cell.tune_benchmark.budget
        return int(budget.epochs or 0)


def load_peer_suites(path: Path, method: str, trials: int, overrides: Sequence[str] = ()) -> PeerSuites:
    """Read the suite (with `--set` overrides); raises SuiteError, naming the key, where the plain loops
    cannot train what the harness would (they train plain ERM with SGD on whole epochs, no augmentation)."""
    raw = apply_overrides(yaml.safe_load(path.read_text()), overrides)
    final = validate_suite(raw, source=str(path))
    entries = [entry for entry in raw["methods"] if entry.get("name") == method]
    if not entries:
        raise SuiteError("methods", f"no method named {method!r} (the suite has "
                         f"{', '.join(m.label for m in final.methods)})", source=str(path))
    tuning_raw = {**raw, "methods": entries[:1], "benchmarks": raw["benchmarks"][:1],
                  "tuning": {**raw.get("tuning", {}), "trials": trials, "scheduler": "fifo"}}
    suites = PeerSuites(validate_suite(tuning_raw, source=str(path)), final, str(path))
    check_plain_trainable(suites)
    return suites


def check_plain_trainable(suites: PeerSuites) -> None:
    """The peers' loop is plain ERM: refuse a cell it would train differently from the harness."""
    bench, source = suites.cell.tune_benchmark, suites.source
    problems = {
        "methods[0].name": None if suites.cell.method.name == "erm" and not suites.cell.method.config
        else "the peers' plain loop trains ERM with its defaults only (--method erm)",
        "benchmarks[0].train.optimizer": None if bench.train.optimizer == "sgd" else "the plain loop uses SGD",
        "benchmarks[0].augment": None if not bench.augment else "the plain loop does not augment",
        "benchmarks[0].scenario": None if bench.scenario is None else "the plain loop trains clean data",
        "benchmarks[0].tuning_budget": None if suites.epochs >= 1 and float(suites.epochs) == (
            (bench.tuning_budget or bench.budget).epochs) else "the plain loop trains a whole number of epochs",
    }
    for key, problem in problems.items():
        if problem:
            raise SuiteError(key, problem, source=source)
    for key in suites.space:
        if not key.startswith(TRAIN_PREFIX):
            raise SuiteError("methods[0].search_space", f"{key}: the plain loop tunes engine keys only",
                             source=source)


def plain_job(suites: PeerSuites, params: Mapping[str, Any], threads: int) -> Job:
    """The plain loop's job for one configuration (flat `train.x` keys), as a trial would train it."""
    bench = suites.cell.tune_benchmark
    train = bench.train.model_copy(update={k.removeprefix(TRAIN_PREFIX): v for k, v in params.items()})
    return Job(bench.dataset, bench.model, train.batch_size, lr=train.lr, weight_decay=train.weight_decay,
               momentum=train.momentum, warmup_fraction=train.warmup_fraction, seed=suites.seeds.trial,
               threads=threads)


def tune_splits(cell: Cell, split_seed: int) -> tuple[ImageArrays, ImageArrays, DatasetInfo]:
    """The splits a trial of `cell` trains and scores on, exactly as `harness.jobs.tuning_trial` reads them."""
    bench = cell.tune_benchmark
    data = get_protocol(cell.protocol).tuning_data(bench, split_seed)
    access = DataAccess(data.dataset, data.phase, val_fraction=data.val_fraction, split_seed=data.split_seed,
                        tune_train_size=data.tune_train_size, tune_val_size=data.tune_val_size)
    return access.split(data.train_split), access.split(data.score_split), access.info


# ---------------------------------------------------------------- the tuning peers


@dataclass
class Trial:
    params: dict[str, Any]
    accuracy: float


@dataclass
class TuningPeer:
    """One peer's run of the tuning job: its wall (what a user waits for) and every trial's result."""

    label: str
    wall_s: float
    trials: list[Trial]
    how: str
    parts: dict[str, float] = field(default_factory=dict)  # named seconds inside `wall_s`

    def accuracies(self) -> list[float]:
        return [t.accuracy for t in self.trials if t.accuracy == t.accuracy]

    def best(self) -> float:
        return max(self.accuracies(), default=float("nan"))


def suggest(trial: optuna.Trial, key: str, dim: Dimension) -> Any:
    """What an Optuna user writes for each dimension of the space."""
    if isinstance(dim, Choice):
        return trial.suggest_categorical(key, list(dim.choices))
    if isinstance(dim, IntRange):
        return trial.suggest_int(key, dim.low, dim.high, log=dim.log)
    assert isinstance(dim, FloatRange), dim
    return trial.suggest_float(key, dim.low, dim.high, log=dim.log)


def optuna_alone(suites: PeerSuites) -> TuningPeer:
    """(a): one process, the data read once, `study.optimize` over a plain loop; torch's default threads."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tuning = suites.tuning.tuning
    start = time.perf_counter()
    train_data, val_data, info = tune_splits(suites.cell, suites.seeds.tuning_split)
    trials: list[Trial] = []

    def objective(trial: optuna.Trial) -> float:
        params = {key: suggest(trial, key, dim) for key, dim in suites.space.items()}
        run = plain_train(plain_job(suites, params, threads=0), train_data, info, epochs=suites.epochs, val=val_data)
        trials.append(Trial(params, run.val_accuracy[-1]))
        return run.val_accuracy[-1]

    study = optuna.create_study(direction="maximize" if tuning.mode == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=tuning.sampler_seed))
    study.optimize(objective, n_trials=tuning.trials)
    return TuningPeer("(a) Optuna alone, one process", time.perf_counter() - start, trials,
                      f"TPE seed {tuning.sampler_seed}, sequential, {torch.get_num_threads()} torch threads")


def ray_tune_defaults(suites: PeerSuites, scratch: Path) -> TuningPeer:
    """(b): the script a user following Ray's docs writes; Ray starts inside `Tuner.fit` and is shut down after."""
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    for module in {sys.modules[plain_train.__module__], sys.modules[__name__]}:  # bench/ is no package on workers
        ray.cloudpickle.register_pickle_by_value(module)
    tuning, cell, split_seed, epochs = suites.tuning.tuning, suites.cell, suites.seeds.tuning_split, suites.epochs

    def trainable(config: dict[str, Any]) -> None:
        train_data, val_data, info = tune_splits(cell, split_seed)  # inside the trainable, as Ray's examples do
        plain_train(plain_job(suites, config, threads=0), train_data, info, epochs=epochs, val=val_data,
                    on_epoch=lambda epoch, accuracy: tune.report({"accuracy": accuracy}))

    param_space = {key: ray_domain(dim) for key, dim in suites.space.items()}
    tuner = tune.Tuner(trainable, param_space=param_space,
                       tune_config=tune.TuneConfig(metric="accuracy", mode=tuning.mode, num_samples=tuning.trials,
                                                   search_alg=OptunaSearch(seed=tuning.sampler_seed)),
                       run_config=tune.RunConfig(storage_path=str(scratch), name="ray-defaults", verbose=0))
    start = time.perf_counter()
    try:
        results = tuner.fit()
        wall = time.perf_counter() - start
        concurrency = int(ray.cluster_resources().get("CPU", 1))
    finally:
        ray.shutdown()
    trials = [Trial({k: result.config[k] for k in suites.space}, float(result.metrics.get("accuracy", float("nan"))))
              for result in results]
    reuse = "reused actors" if tune.TuneConfig().reuse_actors else "a new actor per trial"
    return TuningPeer("(b) Ray Tune script, Ray's defaults", wall, trials,
                      f"OptunaSearch seed {tuning.sampler_seed}, 1 CPU per trial (up to {concurrency} at once), "
                      f"{reuse} (Ray's default), the data read in every trial, `ray.init` inside `fit`")


def ray_domain(dim: Dimension) -> Any:
    from ray import tune

    if isinstance(dim, Choice):
        return tune.choice(list(dim.choices))
    if isinstance(dim, IntRange):
        return tune.lograndint(dim.low, dim.high + 1) if dim.log else tune.randint(dim.low, dim.high + 1)
    assert isinstance(dim, FloatRange), dim
    return tune.loguniform(dim.low, dim.high) if dim.log else tune.uniform(dim.low, dim.high)


def harness_tuning(suites: PeerSuites, run_dir: Path, info: Any, connect_s: float) -> tuple[TuningPeer, dict[str, Any]]:
    """(c): the suite runner's tuning phase on the one-cell suite; returns the peer and the cell's best config."""
    from harness.progress import Progress
    from harness.runner import SuiteRunner

    tuning, cell = suites.tuning.tuning, suites.cell
    runner = SuiteRunner(suites.tuning, run_dir, Progress(quiet=True), info)
    start = time.perf_counter()
    best = runner.tune_all()
    wall = time.perf_counter() - start
    trials = [Trial(json.loads(row["config_json"]), float(row.get(tuning.metric, float("nan"))))
              for row in sorted(runner.trial_rows(cell), key=lambda row: int(row["trial_index"]))]
    peer = TuningPeer("(c) the harness, `SuiteRunner.tune_all`", connect_s + wall, trials,
                      f"seeded TPE per cell, {tuning.cpus_per_trial:g} CPU per trial (up to "
                      f"{info.slots(tuning.cpus_per_trial)} at once), "
                      f"{'reused actors' if tuning.workers == 1 else 'a TorchTrainer per trial'}, `ray.init` included",
                      parts={"`cluster.connect()` (ray.init)": connect_s, "`tune_all`": wall})
    return peer, best.get(cell.key) or {}


# ---------------------------------------------------------------- the final phase


@dataclass
class FinalRun:
    label: str
    wall_s: float
    loop_s: float
    accuracy: float


@dataclass
class FinalPhase:
    label: str
    wall_s: float
    runs: list[FinalRun]
    teachers_s: float = 0.0


def final_configs(suite: Suite, tuned: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each cell's config for the final phase: the tuned one where this run tuned it, else the cell's defaults."""
    configs = {}
    for cell_plan in plan_suite(suite).cells:
        key = cell_plan.cell.key
        configs[key] = dict(tuned[key]) if key in tuned else default_point(cell_plan.cell, cell_plan.space)
    return configs


def run_label(job: FinalJob) -> str:
    return f"{job.cell.benchmark.name}/{job.cell.method.label} seed {job.seed}"


def harness_final(suite: Suite, configs: Mapping[str, dict[str, Any]], run_dir: Path, info: Any) -> FinalPhase:
    """(c): `SuiteRunner.final_all` with the given configs: teachers, every run, each row stored."""
    from harness.progress import Progress
    from harness.runner import SuiteRunner

    runner = SuiteRunner(suite, run_dir, Progress(quiet=True), info)
    start = time.perf_counter()
    runner.final_all(configs)
    wall = time.perf_counter() - start
    rows = runner.store.read()
    primary = {b.name: b.primary_metric for b in suite.benchmarks}
    runs = []
    for row in rows[rows["phase"] == "final"].to_dict("records"):
        label = f"{row['benchmark']}/{row['method']} seed {int(row['seed'])}"
        runs.append(FinalRun(label, float(row.get("wall_s", float("nan"))), float(row.get("train/wall_s", float("nan"))),
                             float(row.get(primary[row["benchmark"]], float("nan")))))
    return FinalPhase("(c) the harness, `SuiteRunner.final_all`", wall, sorted(runs, key=lambda r: r.label))


def sequential_final(suite: Suite, configs: Mapping[str, dict[str, Any]]) -> FinalPhase:
    """(d): every final run, and every teacher once, in this process one after another, with the same specs
    `SuiteRunner.final_all` submits (one run's threads, its split seed, the suite's metrics)."""
    seeds, final = Seeds.of(suite), suite.final
    threads = max(1, int(final.cpus_per_worker))
    teachers: dict[tuple[str, int], bytes] = {}
    teachers_s, runs, start = 0.0, [], time.perf_counter()
    for job in plan_suite(suite).final_jobs():
        bench, teacher = job.cell.benchmark, None
        if job.cell.needs_teacher:
            if (bench.name, job.seed) not in teachers:
                began = time.perf_counter()
                teachers[bench.name, job.seed], _ = train_teacher(bench, "final", job.seed, seeds.final_split, threads)
                teachers_s += time.perf_counter() - began
            teacher = teachers[bench.name, job.seed]
        spec = RunSpec(benchmark=bench, method=job.cell.method, seed=job.seed, hyperparams=configs[job.cell.key],
                       protocol=job.cell.protocol, split_seed=seeds.final_split, metrics=suite.evaluation.metrics,
                       threads=threads)
        began = time.perf_counter()
        metrics = final_run(spec, teacher)
        runs.append(FinalRun(run_label(job), time.perf_counter() - began, float(metrics["train/wall_s"]),
                             float(metrics.get(bench.primary_metric, float("nan")))))
        log(f"    (d) {runs[-1].label}: {runs[-1].wall_s:.1f} s, {bench.primary_metric}={runs[-1].accuracy:.4f}")
    return FinalPhase("(d) the same runs one after another in-process", time.perf_counter() - start,
                      sorted(runs, key=lambda r: r.label), teachers_s)


# ---------------------------------------------------------------- the whole measurement


@dataclass
class Results:
    command: str
    suites: PeerSuites
    tuning: list[TuningPeer]
    harness_final: FinalPhase
    sequential: FinalPhase
    concurrency: int
    machine: dict[str, str]

    def peer(self, prefix: str) -> TuningPeer:
        return next(p for p in self.tuning if p.label.startswith(prefix))

    def ratios(self) -> dict[str, float]:
        harness = self.peer("(c)").wall_s
        return {"vs_optuna": harness / self.peer("(a)").wall_s, "vs_ray_defaults": harness / self.peer("(b)").wall_s,
                "final": self.harness_final.wall_s / (self.sequential.wall_s / self.concurrency)}


def measure(suites: PeerSuites, command: str) -> Results:
    """(a), (b), (c) tuning and final phase, then (d); one Ray session for (c), none left behind."""
    from harness import cluster

    machine = machine_facts()
    log(f"(a) Optuna alone: {suites.tuning.tuning.trials} trials")
    peers = [optuna_alone(suites)]
    log(f"    {peers[-1].wall_s:.1f} s, best {peers[-1].best():.4f}")
    with tempfile.TemporaryDirectory(prefix="harness-peers-") as scratch:
        log("(b) Ray Tune with Ray's defaults")
        peers.append(ray_tune_defaults(suites, Path(scratch, "ray-defaults")))
        log(f"    {peers[-1].wall_s:.1f} s, best {peers[-1].best():.4f}")
        log("(c) the harness: tuning")
        start = time.perf_counter()
        info = cluster.connect()
        connect_s = time.perf_counter() - start
        try:
            peer, best = harness_tuning(suites, Path(scratch, "harness-tune"), info, connect_s)
            peers.append(peer)
            log(f"    {peer.wall_s:.1f} s, best {peer.best():.4f}")
            configs = final_configs(suites.final, {suites.cell.key: best})
            log(f"(c) the harness: final phase, {len(plan_suite(suites.final).final_jobs())} runs")
            final = harness_final(suites.final, configs, Path(scratch, "harness-final"), info)
            log(f"    {final.wall_s:.1f} s")
        finally:
            cluster.shutdown()
    workers = suites.final.final
    concurrency = info.slots(workers.workers * workers.cpus_per_worker, workers.workers * workers.worker_gpus)
    log("(d) the final runs one after another in-process")
    sequential = sequential_final(suites.final, configs)
    machine["load_end"] = f"{os.getloadavg()[0]:.2f}"
    return Results(command, suites, peers, final, sequential, concurrency, machine)


# ---------------------------------------------------------------- the report


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def config_key(params: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple((k, f"{v:.{SAME_CONFIG_DIGITS}g}" if isinstance(v, float) else v) for k, v in sorted(params.items()))


def same_config_gaps(peers: Sequence[TuningPeer]) -> tuple[int, float]:
    """Configurations trained by two peers or more, and the largest accuracy gap between them."""
    seen: dict[tuple[Any, ...], list[float]] = {}
    for peer in peers:
        for trial in peer.trials:
            seen.setdefault(config_key(trial.params), []).append(trial.accuracy)
    shared = [accs for accs in seen.values() if len(accs) > 1]
    return len(shared), max((max(a) - min(a) for a in shared), default=float("nan"))


def summary_table(r: Results) -> str:
    ratios, a, b, c = r.ratios(), r.peer("(a)"), r.peer("(b)"), r.peer("(c)")
    per_loop = r.sequential.wall_s / r.concurrency
    rows = [
        ["harness tuning wall / Optuna alone", f"{c.wall_s:.1f} / {a.wall_s:.1f} s = {ratios['vs_optuna']:.2f}",
         f"<= {TARGETS['vs_optuna']}", verdict(ratios["vs_optuna"] <= TARGETS["vs_optuna"])],
        ["harness tuning wall / Ray Tune with its defaults",
         f"{c.wall_s:.1f} / {b.wall_s:.1f} s = {ratios['vs_ray_defaults']:.2f}", f"<= {TARGETS['vs_ray_defaults']}",
         verdict(ratios["vs_ray_defaults"] <= TARGETS["vs_ray_defaults"])],
        [f"harness final phase / (sum of the same runs in-process / {r.concurrency} slots)",
         f"{r.harness_final.wall_s:.1f} / {per_loop:.1f} s = {ratios['final']:.2f}", f"<= {TARGETS['final']}",
         verdict(ratios["final"] <= TARGETS["final"])],
    ]
    return table(["Ratio", "Measured", "Target", "Verdict"], rows)


def tuning_table(r: Results) -> str:
    rows = []
    for peer in r.tuning:
        accs = peer.accuracies()
        rows.append([peer.label, f"{peer.wall_s:.1f}", f"{len(accs)}/{len(peer.trials)}", f"{peer.best():.4f}",
                     f"{statistics.mean(accs):.4f}" if accs else "nan", peer.how])
        rows += [[f"... of which {part}", f"{seconds:.1f}", "", "", "", ""] for part, seconds in peer.parts.items()]
    return table(["Peer", "Wall s", "Trials scored", "Best val acc", "Mean val acc", "How"], rows)


def final_table(r: Results) -> str:
    seq = {run.label: run for run in r.sequential.runs}
    rows = []
    for run in r.harness_final.runs:
        twin = seq.get(run.label)
        rows.append([run.label, f"{run.wall_s:.1f}", f"{run.loop_s:.1f}", f"{twin.wall_s:.1f}" if twin else "",
                     f"{twin.loop_s:.1f}" if twin else "", f"{run.accuracy:.4f}", f"{twin.accuracy:.4f}" if twin else ""])
    rows.append(["**phase** (teachers included)", f"**{r.harness_final.wall_s:.1f}**", "",
                 f"**{r.sequential.wall_s:.1f}** (teachers {r.sequential.teachers_s:.1f})", "", "", ""])
    return table(["Final run", "(c) row wall s", "(c) loop s", "(d) wall s", "(d) loop s", "(c) primary metric",
                  "(d) primary metric"], rows)


def notes(r: Results) -> list[str]:
    shared, gap = same_config_gaps(r.tuning)
    primary_gap = max((abs(run.accuracy - twin.accuracy) for run in r.harness_final.runs
                       for twin in r.sequential.runs if twin.label == run.label), default=float("nan"))
    c, a = r.peer("(c)"), r.peer("(a)")
    inside = c.parts.get("`tune_all`", c.wall_s)
    out = [
        f"- **Like for like.** {shared} configuration(s) were trained by more than one tuning peer (seeded TPE "
        "proposes the same first configurations to each); their tune_val accuracies differ by at most "
        f"{gap:.4f}. Later TPE proposals differ where trials finish in a different order (two at once under "
        f"Ray), so best accuracies agree only within noise. The final runs' primary metric differs by at most "
        f"{primary_gap:.4f} between (c) and (d) (same seeds, same configs).",
        f"- **Tuning.** The harness spends {inside:.1f} s in `tune_all` plus {c.wall_s - inside:.1f} s starting Ray, "
        f"against {a.wall_s:.1f} s for Optuna alone ({a.how}); the harness runs trials in parallel, each on one "
        "thread, Optuna alone runs them one after another on all threads.",
        f"- **Final phase.** {len(r.sequential.runs)} runs take {r.sequential.wall_s:.1f} s one after another in "
        f"this process (teachers {r.sequential.teachers_s:.1f} s of it), so {r.concurrency} slots could at best take "
        f"{r.sequential.wall_s / r.concurrency:.1f} s; the harness took {r.harness_final.wall_s:.1f} s. The gap is "
        "what each run pays outside its own work (worker start-up, reports, checkpoints) and what parallel runs "
        "lose to each other on shared cores.",
        f"- **Noise.** Load average {r.machine['load_start']} at the start, {r.machine['load_end']} at the end: "
        "the machine is shared, so only ratios within this run are meaningful, and the lead reruns the command on "
        "an idle machine for the published figures.",
    ]
    return out


def report_markdown(r: Results) -> str:
    m, s = r.machine, r.suites
    cell, tuning = s.cell, s.tuning.tuning
    facts = (f"{m['cores']} cores ({m['cpu']}), {m['memory']}, no GPU; Python {m['python']}, torch {m['torch']}, "
             f"ray {m['ray']}, optuna {optuna.__version__}; 1-minute load average {m['load_start']} at the start, "
             f"{m['load_end']} at the end.")
    space = ", ".join(f"`{k}` {v.model_dump(mode='json')}" for k, v in s.space.items())
    job = (f"Tuning job: `{cell.key}` of `{s.source}`, {tuning.trials} trials, FIFO (every trial runs its "
           f"{s.epochs} epoch(s)), search space {space}, sampler seed {tuning.sampler_seed}. Final phase: "
           f"{len(r.harness_final.runs)} runs of `{s.source}` ({', '.join(m.label for m in s.final.methods)} x seeds "
           f"{list(s.final.final.seeds)}); `{cell.method.label}` takes the harness's tuned config, the other methods "
           "their defaults (`harness.plan.default_point`), since only one cell is tuned here.")
    parts = [SECTION_TITLE, "", f"Reproduce: `{r.command}`", "", f"Measured "
             f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} on {facts}", "", job, "", summary_table(r), "",
             "### Tuning", "", tuning_table(r), "", "### Final phase", "", final_table(r), "",
             "### What the figures say", "", *notes(r)]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/peers.py", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path("suites/quickstart.yaml"))
    parser.add_argument("--method", default="erm", help="the method whose cell is the tuning job (default erm)")
    parser.add_argument("--trials", type=int, default=16, help="tuning trials (default 16)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a suite value, as `python -m harness.run --set` does")
    parser.add_argument("--write", type=Path, default=None, metavar="FILE",
                        help="update this file's peers section, e.g. docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be positive")
    return args


def command_line(args: argparse.Namespace) -> str:
    sets = "".join(f" --set {item}" for item in args.overrides)
    write = f" --write {args.write}" if args.write else ""
    return f"python bench/peers.py --suite {args.suite} --method {args.method} --trials {args.trials}{sets}{write}"


def main(argv: Sequence[str] | None = None, on_results: Callable[[Results], None] | None = None) -> int:
    args = parse_args(argv)
    try:
        suites = load_peer_suites(args.suite, args.method, args.trials, args.overrides)
    except (HarnessInputError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = measure(suites, command_line(args))
    if on_results is not None:
        on_results(results)
    section = report_markdown(results)
    print(section)
    if args.write:
        write_section(args.write, section, SECTION)
        log(f"wrote the {SECTION} section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
