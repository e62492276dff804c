"""Each tuning study's Optuna sampler, built from the suite's `tuning.sampler` and the study's own seed.

`tpe` is the sampler every suite had before `tuning.sampler` existed: Optuna's TPE with its default 10
random start-up trials, seeded with `tuning.sampler_seed` in every cell. With the 3-8 trials a suite
affords, that "search" is a handful of random draws, and cells whose spaces share dimensions (every
cell's `train.lr` and `train.weight_decay`) draw the same values. `sobol_tpe` proposes a study's first
10 trials from a scrambled Sobol sequence, which covers the space more evenly than as many random draws,
and TPE models the rest; every study is seeded on its own (`harness.plan.SamplerChoice`: the suite's
sampler seed, the cell and the study index), so methods do not share draws.

Why a Sobol start of 10 and not a start scaled to the budget: `bench/sampler_start.py` (20 toy
objectives shaped like a learning-rate / weight-decay / knob search, 40 sampler seeds each) measured the
tuner luck (std over seeds of the picked trial's true score) / the mean regret of the picked trial, with
a start of s = max(2, trials // 4) trials before TPE takes over:

    trials  tpe (random 10)   random s, then TPE   Sobol s, then TPE   sobol_tpe (Sobol 10)
    3       0.031 / 0.039     0.033 / 0.042        0.026 / 0.037       0.021 / 0.032
    4       0.025 / 0.032     0.025 / 0.034        0.021 / 0.031       0.016 / 0.026
    8       0.014 / 0.019     0.012 / 0.019        0.013 / 0.018       0.010 / 0.016

Handing trials to TPE after two points does not pay at these budgets (it models little from two
scores); the even coverage of a Sobol start does, cutting the luck by a quarter to a third. This is a
toy: the harness studies' own luck (about 1.3 points, issue 13) is what `tuning.repeats` puts inside
the intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import qmc

from harness.search_space import Choice, Dimension, FloatRange, IntRange
from harness.suite import TPE


def build_sampler(name: str, seed: int, startup_trials: int, space: Mapping[str, Dimension]) -> BaseSampler:
    """A fresh sampler of kind `name` (`tuning.sampler`) for one study over `space` (flat keys, suite
    vocabulary); `harness.plan.SamplerChoice` says which, with which seed and start."""
    if name == TPE:
        return TPESampler(seed=seed)
    return SobolStartTPE(optuna_distributions(space), startup_trials, seed)


def optuna_distributions(space: Mapping[str, Dimension]) -> dict[str, BaseDistribution]:
    """The space as the Optuna distributions Ray Tune's OptunaSearch builds from it (`harness.tuning`)."""
    out: dict[str, BaseDistribution] = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            out[key] = CategoricalDistribution(list(dim.choices))
        elif isinstance(dim, IntRange):
            out[key] = IntDistribution(dim.low, dim.high, log=dim.log)
        elif isinstance(dim, FloatRange):
            out[key] = FloatDistribution(dim.low, dim.high, log=dim.log)
        else:
            raise TypeError(f"unknown search dimension {dim!r}")
    return out


class SobolStartTPE(BaseSampler):
    """Trial n < `startup` takes point n of a scrambled Sobol sequence (seeded), later trials TPE's
    proposal. Point n depends only on the seed and n, so a resumed study proposes what an uninterrupted
    one would have; an enqueued trial (the defaults) keeps its own values and uses up its point."""

    def __init__(self, space: Mapping[str, BaseDistribution], startup: int, seed: int) -> None:
        self._space = dict(sorted(space.items()))
        self._startup = startup
        size = 2 ** max(1, math.ceil(math.log2(max(startup, 1))))  # Sobol is balanced at powers of two
        self._points = qmc.Sobol(d=max(1, len(self._space)), scramble=True, seed=seed).random(size)
        self._tpe = TPESampler(seed=seed, n_startup_trials=startup)

    def _in_start(self, trial: FrozenTrial) -> bool:
        return trial.number < self._startup and bool(self._space)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self._in_start(trial):
            return dict(self._space)
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if self._in_start(trial):
            point = self._points[trial.number]
            return {key: from_unit(float(u), self._space[key]) for key, u in zip(self._space, point, strict=False)
                    if key in search_space}
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._tpe.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


def from_unit(u: float, distribution: BaseDistribution) -> Any:
    """The value at quantile `u` in [0, 1) of a distribution: uniform in the log where it is logarithmic."""
    u = min(max(u, 0.0), np.nextafter(1.0, 0.0))
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[int(u * len(distribution.choices))]
    low, high = float(distribution.low), float(distribution.high)
    if isinstance(distribution, IntDistribution):
        if distribution.log:
            value = math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low)))
        else:
            value = low + u * (high + 1 - low)
        return int(min(max(math.floor(value), low), high))
    assert isinstance(distribution, FloatDistribution)
    if distribution.log:
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
    return float(low + u * (high - low))

