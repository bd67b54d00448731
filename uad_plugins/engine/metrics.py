"""Metric selection: turn ``plugin:<name>`` references into an anomalib ``Evaluator``."""

from __future__ import annotations

from collections.abc import Sequence

from uad_plugins.factory import create_metric

__all__ = ["DEFAULT_METRICS", "attach_metrics", "build_evaluator"]

#: computed by `uad fit` / `uad test` when no --metrics are given
DEFAULT_METRICS: tuple[str, ...] = (
    "plugin:image_auroc",
    "plugin:pixel_auroc",
    "plugin:image_f1max",
    "plugin:pixel_f1max",
    "plugin:pixel_aupro",
)


def build_evaluator(metrics: Sequence[str] | None = None):
    """An anomalib ``Evaluator`` whose test metrics are the given references (default :data:`DEFAULT_METRICS`)."""
    from anomalib.metrics import Evaluator

    refs = list(metrics) if metrics else list(DEFAULT_METRICS)
    return Evaluator(test_metrics=[create_metric(ref) for ref in refs])


def attach_metrics(model, metrics: Sequence[str] | None = None) -> None:
    """Replace the model's evaluator with one computing ``metrics``."""
    model.evaluator = build_evaluator(metrics)
