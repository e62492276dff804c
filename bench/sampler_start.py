"""How much tuner luck each sampler start leaves in a short study: a simulation on toy objectives.

A toy objective is shaped like a learning-rate / weight-decay / method-knob search (a smooth peak in
log10(lr), log10(weight decay) and one linear knob, its optimum drawn per objective, observed with
noise). For each sampler and trial budget, many studies (one per sampler seed and objective) pick their
best observed trial; we report the mean regret of the picked trial's true score and its spread (the std
over seeds: the tuner luck a final run inherits). `python bench/sampler_start.py` prints the table;
`harness.samplers` cites it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

import numpy as np
import optuna
from optuna.samplers import BaseSampler, TPESampler

from harness.plan import LEGACY_STARTUP_TRIALS
from harness.samplers import SobolStartTPE, build_sampler, optuna_distributions
from harness.search_space import FloatRange

SPACE = {"train.lr": FloatRange(low=1e-3, high=0.5, log=True),
         "train.weight_decay": FloatRange(low=1e-6, high=1e-2, log=True),
         "method.knob": FloatRange(low=0.0, high=0.3)}
NOISE = 0.01  # observation noise of a tuning score (the seed-to-seed noise of one trial)
TPE, SOBOL_TPE = "tpe", "sobol_tpe"  # `tuning.sampler`: random, and Sobol, start of 10 trials
SHORT_RANDOM_TPE = "tpe, random start of max(2, trials // 4)"
SHORT_SOBOL_TPE = "sobol start of max(2, trials // 4)"
SAMPLERS = (TPE, SHORT_RANDOM_TPE, SHORT_SOBOL_TPE, SOBOL_TPE)


def scaled_start(trials: int) -> int:
    """A start scaled to the budget, the alternative `sobol_tpe`'s fixed start was measured against."""
    return min(trials, max(2, trials // 4))


def toy_objective(rng: np.random.Generator) -> Callable[[dict[str, float]], float]:
    """A true score: 0.9 at an optimum drawn inside the space, falling off quadratically in each axis."""
    lr0, wd0, knob0 = rng.uniform(-2.5, -0.7), rng.uniform(-5.5, -2.5), rng.uniform(0.0, 0.3)

    def score(params: dict[str, float]) -> float:
        return (0.9 - 0.08 * (math.log10(params["train.lr"]) - lr0) ** 2
                - 0.01 * (math.log10(params["train.weight_decay"]) - wd0) ** 2
                - 0.5 * (params["method.knob"] - knob0) ** 2)
    return score


def make_sampler(name: str, trials: int, seed: int) -> BaseSampler:
    if name == SHORT_RANDOM_TPE:
        return TPESampler(seed=seed, n_startup_trials=scaled_start(trials))
    if name == SHORT_SOBOL_TPE:
        return SobolStartTPE(optuna_distributions(SPACE), scaled_start(trials), seed)
    return build_sampler(name, seed, LEGACY_STARTUP_TRIALS, SPACE)


def picked_true_score(name: str, trials: int, seed: int, objective_seed: int) -> float:
    """Run one study; the true score of the trial with the best observed (noisy) score."""
    rng = np.random.default_rng(objective_seed)
    score = toy_objective(rng)
    noise = np.random.default_rng(10_000 + seed)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(name, trials, seed))
    truth = {}
    for _ in range(trials):
        trial = study.ask()
        params = {key: trial.suggest_float(key, dim.low, dim.high, log=dim.log) for key, dim in SPACE.items()}
        truth[trial.number] = score(params)
        study.tell(trial, truth[trial.number] + noise.normal(0, NOISE))
    return truth[study.best_trial.number] - 0.9


def simulate(budgets: Sequence[int], seeds: int, objectives: int) -> list[dict[str, float | str]]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out = []
    for trials in budgets:
        for name in SAMPLERS:
            regret = np.array([[picked_true_score(name, trials, seed, obj) for seed in range(seeds)]
                               for obj in range(objectives)])
            out.append({"trials": trials, "sampler": name, "mean_regret": float(-regret.mean()),
                        "luck_std": float(regret.std(axis=1, ddof=1).mean())})
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[3, 4, 8])
    parser.add_argument("--seeds", type=int, default=40, help="sampler seeds per objective")
    parser.add_argument("--objectives", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"{'trials':>6}  {'sampler':<42} {'mean regret':>11} {'luck (std over seeds)':>22}")
    for row in simulate(args.budgets, args.seeds, args.objectives):
        print(f"{row['trials']:>6}  {row['sampler']:<42} {row['mean_regret']:>11.4f} {row['luck_std']:>22.4f}")


if __name__ == "__main__":
    main()
