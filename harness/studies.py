"""Studies of a suite beyond the leaderboard: budget curves, tuning sensitivity and the protocol gap.

Pure functions from store rows (or the leaderboard) to tables, which the dashboard only draws.
Budget curves show whether a method won because it was tuned longer; sensitivity shows how much
of its score depends on finding the right hyper-parameters; the protocol gap shows how far a
ranking moves when the tuning protocol changes (and how much tuning on test would flatter it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from harness.columns import higher_is_better
from harness.leaderboard import phase_rows
from harness.protocols import protocol_label, protocol_sort_key
from harness.statistics import kendall_tau

TUNE_OBJECTIVE = "val/accuracy"
KEYS = ["benchmark", "protocol", "method"]
CURVE_COLUMNS = [
    *KEYS, "study", "trial", "trial_index", "status", "value", "best_so_far", "samples_seen", "cumulative_samples_seen",
    "config_json",
]
SENSITIVITY_COLUMNS = [*KEYS, "n", "min", "max", "median", "std", "iqr"]


def trial_order(group: pd.DataFrame) -> pd.DataFrame:
    """Trials in search order: by `trial_index`, else by a numeric `trial` id, else as stored."""
    for column in ("trial_index", "trial"):
        if column in group:
            order = pd.to_numeric(group[column], errors="coerce")
            if order.notna().all():
                return group.assign(_order=order.to_numpy()).sort_values("_order", kind="stable").drop(columns="_order")
    return group


def budget_curves(rows: pd.DataFrame, *, objective: str = TUNE_OBJECTIVE) -> pd.DataFrame:
    """Best-so-far tuning objective per benchmark/protocol/method against trial number and compute.

    One row per tuning trial in search order (`trial` counts from 1, failed trials included: they
    consumed budget too); with `tuning.repeats`, one curve per study (`study`; 0 for rows made before it). `best_so_far` is the running best of `objective` (NaN before the first
    success); `cumulative_samples_seen` sums `train/samples_seen` over trials so far (a trial
    without a count adds nothing; NaN when no trial has one). `config_json` is carried along for hovers.
    """
    tune = phase_rows(rows, "tune")
    tune = tune.assign(study=tune["study"].fillna(0).astype(int) if "study" in tune else 0)
    curves = []
    for (benchmark, protocol, method, study), group in tune.groupby([*KEYS, "study"], sort=True) if len(tune) else ():
        ordered = trial_order(group)
        values = pd.to_numeric(ordered[objective], errors="coerce") if objective in ordered else pd.Series(
            np.nan, index=ordered.index)
        running = values.cummax() if higher_is_better(objective) else values.cummin()
        samples = (pd.to_numeric(ordered["train/samples_seen"], errors="coerce") if "train/samples_seen" in ordered
                   else pd.Series(np.nan, index=ordered.index))
        cumulative = samples.fillna(0).cumsum() if samples.notna().any() else samples
        curves.append(pd.DataFrame({
            "benchmark": benchmark, "protocol": protocol, "method": method, "study": study,
            "trial": np.arange(1, len(ordered) + 1),
            "trial_index": ordered["trial_index"].to_numpy() if "trial_index" in ordered else np.nan,
            "status": ordered["status"].to_numpy() if "status" in ordered else "ok",
            "value": values.to_numpy(dtype=float), "best_so_far": running.ffill().to_numpy(dtype=float),
            "samples_seen": samples.to_numpy(dtype=float), "cumulative_samples_seen": cumulative.to_numpy(dtype=float),
            "config_json": ordered["config_json"].to_numpy() if "config_json" in ordered else None,
        }))
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS)


def sensitivity(rows: pd.DataFrame, *, objective: str = TUNE_OBJECTIVE) -> pd.DataFrame:
    """Per benchmark/protocol/method: spread of the final `objective` over successful tuning trials.

    A method whose trials spread widely needs its budget to find a good config; a narrow one is
    robust to its hyper-parameters. `std` has ddof=1 (NaN for one trial); `iqr` is q75 - q25.
    """
    tune = phase_rows(rows, "tune")
    records = []
    for (benchmark, protocol, method), group in tune.groupby(KEYS, sort=True) if len(tune) else ():
        values = pd.to_numeric(group[objective], errors="coerce") if objective in group else pd.Series([], dtype=float)
        ok = group["status"] == "ok" if "status" in group else True
        data = values[ok].to_numpy(dtype=float)
        data = data[np.isfinite(data)]
        q25, q75 = np.quantile(data, [0.25, 0.75]) if len(data) else (math.nan, math.nan)
        records.append({
            "benchmark": benchmark, "protocol": protocol, "method": method, "n": len(data),
            "min": float(data.min()) if len(data) else math.nan, "max": float(data.max()) if len(data) else math.nan,
            "median": float(np.median(data)) if len(data) else math.nan,
            "std": float(data.std(ddof=1)) if len(data) > 1 else math.nan, "iqr": float(q75 - q25),
        })
    return pd.DataFrame.from_records(records, columns=SENSITIVITY_COLUMNS)


@dataclass(frozen=True)
class ProtocolGap:
    """Ranks of each method under each protocol side by side, and how well the rankings agree.

    `ranks`: benchmark, method, then one column per protocol (canonical order) holding the rank.
    `agreement`: benchmark, protocol_a, protocol_b, label_a, label_b, kendall_tau, n_methods.
    `labels`: protocol -> the name to show readers (see `harness.protocols.protocol_label`).
    """

    ranks: pd.DataFrame
    agreement: pd.DataFrame
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def protocols(self) -> list[str]:
        return list(self.labels)


def protocol_gap(board: pd.DataFrame) -> ProtocolGap:
    """Compare, per benchmark, the rankings a leaderboard gives under each protocol.

    Kendall's tau-b between every pair of protocols present on a benchmark, over the methods ranked
    under both: 1 means the protocol does not change the order, lower means the choice matters.
    """
    agreement_columns = ["benchmark", "protocol_a", "protocol_b", "label_a", "label_b", "kendall_tau", "n_methods"]
    if board.empty or "protocol" not in board:
        return ProtocolGap(pd.DataFrame(columns=["benchmark", "method"]), pd.DataFrame(columns=agreement_columns))
    protocols = sorted({str(p) for p in board["protocol"]}, key=protocol_sort_key)
    with_ranks = board.assign(protocol=board["protocol"].astype(str), rank=pd.to_numeric(board["rank"]))
    ranks = with_ranks.groupby(["benchmark", "method", "protocol"])["rank"].min().unstack("protocol")
    ranks = ranks.reindex(columns=protocols).reset_index()
    ranks.columns.name = None
    pairs = []
    for benchmark, group in ranks.groupby("benchmark", sort=True):
        present = [p for p in protocols if group[p].notna().any()]
        for a, b in combinations(present, 2):
            both = group[group[a].notna() & group[b].notna()]
            pairs.append({
                "benchmark": benchmark, "protocol_a": a, "protocol_b": b, "label_a": protocol_label(a),
                "label_b": protocol_label(b), "kendall_tau": kendall_tau(list(both[a]), list(both[b])),
                "n_methods": len(both),
            })
    agreement = pd.DataFrame.from_records(pairs, columns=agreement_columns)
    return ProtocolGap(ranks, agreement, {p: protocol_label(p) for p in protocols})
