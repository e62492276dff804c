"""Static HTML dashboards rendered from a run's result store (works offline, from file://)."""

from dashboards.figures import pareto_front
from dashboards.page import NoResultsError, build_dashboard, render_page

__all__ = ["NoResultsError", "build_dashboard", "pareto_front", "render_page"]
