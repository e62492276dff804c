"""Plugin discovery: import every module of `methods/`, of the `harness.methods` entry-point group,
and of `$HARNESS_PLUGINS` (comma-separated module names, for plugins that are not packaged).

The engine never names a method. A plugin module may register methods, tuning protocols
(`harness.protocols.register_protocol`) or anything else with a registry; suite validation and
`harness.protocols.get_protocol` run discovery first. A plugin that fails to import is reported, not
fatal, so one broken third-party method cannot take the whole suite down.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
from dataclasses import dataclass

ENTRY_POINT_GROUP = "harness.methods"
PLUGINS_ENV = "HARNESS_PLUGINS"


@dataclass(frozen=True)
class PluginFailure:
    module: str
    error: str


_failures: list[PluginFailure] | None = None


def discover_methods() -> list[PluginFailure]:
    """Import all method plugins once per process; return the ones that failed to import."""
    global _failures
    if _failures is not None:
        return list(_failures)
    failures: list[PluginFailure] = []
    import methods as package  # the built-in plugin folder

    for module in pkgutil.iter_modules(package.__path__, prefix="methods."):
        try:
            importlib.import_module(module.name)
        except Exception as error:  # noqa: BLE001 - a broken plugin is reported, not fatal
            failures.append(PluginFailure(module.name, f"{type(error).__name__}: {error}"))
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as error:  # noqa: BLE001
            failures.append(PluginFailure(entry.value, f"{type(error).__name__}: {error}"))
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001
            failures.append(PluginFailure(name, f"{type(error).__name__}: {error}"))
    _failures = failures
    return list(failures)
