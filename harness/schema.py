"""`Strict`: the pydantic base of every config block a suite is made of.

Frozen, so a validated suite cannot drift while it runs (its hash names its results), and closed
(`extra="forbid"`), so a misspelt key is an error that names its path, never a silently ignored default.
Each layer declares its own blocks on this base (`harness.train_settings`, `harness.data.scenario_spec`);
`harness.suite` composes them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
