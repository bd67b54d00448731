"""``uad bench``: benchmark recipes (models x data x precisions) -> bench.json, bench.md and PNG plots.

Importing this package is light; :func:`run_benchmark` imports torch, anomalib and OpenVINO when it runs.
"""

from __future__ import annotations

from typing import Any

from uad_plugins.bench.recipe import DataEntry, ModelEntry, Recipe, load_recipe, parse_recipe

__all__ = ["DataEntry", "ModelEntry", "Recipe", "load_recipe", "parse_recipe", "run_benchmark", "write_report"]


def run_benchmark(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run a recipe (see :func:`uad_plugins.bench.runner.run_benchmark`)."""
    from uad_plugins.bench.runner import run_benchmark as run

    return run(*args, **kwargs)


def write_report(*args: Any, **kwargs: Any) -> Any:
    """Render bench.md and the plots (see :func:`uad_plugins.bench.report.write_report`)."""
    from uad_plugins.bench.report import write_report as write

    return write(*args, **kwargs)
