"""Empirical risk minimisation: plain cross-entropy on the labels. The baseline every method must beat.

The engine's `Method` base class already is ERM; this file registers it under its own name so a
suite can list it, and so the contract test covers the baseline like any other method.
"""

from __future__ import annotations

from harness.method import Method, MethodInfo, register_method


@register_method
class ERM(Method):
    """Minimise the mean cross-entropy of the model's predictions and the true labels."""

    info = MethodInfo(
        name="erm",
        summary="Empirical risk minimisation (cross-entropy); the tuned baseline.",
        paper="Vapnik, The Nature of Statistical Learning Theory, 1995",
    )
