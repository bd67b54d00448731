"""Per-category test metrics for unified (multi-class) datamodules.

:class:`PerCategoryMetrics` is a Lightning callback: during ``test`` it splits every batch by the category of its
images (``datamodule.category_of(image_paths)``) and updates a fresh copy of each selected metric per category.
At the end of testing :attr:`PerCategoryMetrics.per_category` holds ``{category: {metric: value}}`` and
:attr:`PerCategoryMetrics.mean` the mean of each metric over the categories (the ADer-style aggregate of
multi-class benchmarks: every category weighs the same, whatever its number of images).

Batches are read after anomalib's post-processor has normalised and thresholded them (the update of a batch is
deferred to the start of the next one and to the end of the test epoch); as in the evaluator, threshold-free
metrics read the raw outputs kept by :class:`~uad_plugins.engine.metrics.RawOutputs`, and metrics that read
predicted labels see the thresholded batch.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from anomalib.visualization import ImageVisualizer
from lightning.pytorch import Callback

from uad_plugins.engine.metrics import DEFAULT_METRICS, RAW_ATTRIBUTE, RawMetricFeed, reads_thresholded
from uad_plugins.errors import UadError
from uad_plugins.factory import create_metric

__all__ = ["CategoryImageVisualizer", "PerCategoryMetrics", "category_count"]

logger = logging.getLogger("uad_plugins")


def category_count(datamodule: Any) -> int:
    """How many categories a datamodule holds (0 when it does not say: a single-category datamodule)."""
    try:
        categories = getattr(datamodule, "categories", None)
    except UadError:  # categories that cannot be listed: treat it as a single-category datamodule
        return 0
    return len(categories) if isinstance(categories, (list, tuple)) and callable(
        getattr(datamodule, "category_of", None)) else 0


class PerCategoryMetrics(Callback):
    """Compute every selected test metric per category, and their mean over the categories.

    Args:
        metrics: metric references (as for the evaluator); default :data:`~uad_plugins.engine.metrics.DEFAULT_METRICS`.
        category_of: maps image paths to categories; default: the trainer's ``datamodule.category_of``.
    """

    def __init__(self, metrics: Sequence[str] | None = None,
                 category_of: Callable[[Sequence[str]], list[str]] | None = None) -> None:
        self.references = list(metrics) if metrics else list(DEFAULT_METRICS)
        self.category_of = category_of
        self._metrics: dict[str, list[Any]] = {}
        self._feeds: dict[str, RawMetricFeed] = {}  # raw outputs of each category, fed at the end
        self._pending: tuple[Any, Callable[[Sequence[str]], list[str]]] | None = None
        self.per_category: dict[str, dict[str, float | None]] = {}
        self.mean: dict[str, float | None] = {}

    def _resolver(self, trainer: Any) -> Callable[[Sequence[str]], list[str]]:
        if self.category_of is not None:
            return self.category_of
        resolver = getattr(getattr(trainer, "datamodule", None), "category_of", None)
        if resolver is None:
            raise RuntimeError("PerCategoryMetrics needs a datamodule with category_of(image_paths).")
        return resolver

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start from empty metrics."""
        del trainer, pl_module
        self._metrics, self._feeds, self._pending = {}, {}, None
        self.per_category, self.mean = {}, {}

    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        """Count the previous batch (post-processed by now)."""
        del trainer, pl_module, batch, batch_idx, dataloader_idx
        self._flush()

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        """Remember the batch; anomalib's post-processor runs after this callback and changes it in place."""
        del pl_module, batch_idx, dataloader_idx
        self._flush()
        self._pending = (outputs if outputs is not None else batch, self._resolver(trainer))

    def _flush(self) -> None:
        if self._pending is None:
            return
        batch, resolver = self._pending
        self._pending = None
        paths = [str(p) for p in (getattr(batch, "image_path", None) or [])]
        if not paths:
            return
        categories = resolver(paths)
        for category in dict.fromkeys(categories):
            index = torch.tensor([i for i, c in enumerate(categories) if c == category], dtype=torch.long)
            subset = _take(batch, index)
            if category not in self._metrics:
                self._metrics[category] = [create_metric(ref) for ref in self.references]
                self._feeds[category] = RawMetricFeed()
            metrics = self._metrics[category]
            for metric in metrics:
                if reads_thresholded(metric):
                    metric.update(subset)
            self._feeds[category].add(subset, [m for m in metrics if not reads_thresholded(m)])

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Compute the metrics of every category and their mean."""
        del trainer, pl_module
        self._flush()
        for category, metrics in self._metrics.items():
            self._feeds[category].feed([m for m in metrics if not reads_thresholded(m)])
        per_category: dict[str, dict[str, float | None]] = {}
        for category in sorted(self._metrics, key=lambda c: (c == "", c)):
            values: dict[str, float | None] = {}
            for metric in self._metrics[category]:
                values[metric.name] = _compute(metric, category)
            per_category[category or "unknown"] = values
        names = [m.name for m in next(iter(self._metrics.values()), [])]
        mean: dict[str, float | None] = {}
        for name in names:
            finite = [v[name] for v in per_category.values() if v.get(name) is not None]
            mean[name] = float(sum(finite) / len(finite)) if finite else None
        self.per_category, self.mean = per_category, mean
        self._metrics, self._feeds = {}, {}


class CategoryImageVisualizer(ImageVisualizer):
    """anomalib's ``ImageVisualizer`` writing each test image under ``<output_dir>/<category>/``.

    Categories often share defect and file names (``test/good/000.png``); one folder per category keeps every
    heatmap.
    """

    @classmethod
    def from_visualizer(cls, visualizer: ImageVisualizer) -> CategoryImageVisualizer:
        """A copy of ``visualizer`` (same fields and settings) that writes per category."""
        new = copy.copy(visualizer)
        new.__class__ = cls
        return new

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        """Write the heatmaps of each category's images into that category's folder."""
        resolver = getattr(getattr(trainer, "datamodule", None), "category_of", None)
        if resolver is None:
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
            return
        base = Path(self.output_dir) if self.output_dir is not None else Path(trainer.default_root_dir) / "images"
        items = list(batch)
        categories = resolver([str(item.image_path) for item in items])
        try:
            for category in dict.fromkeys(categories):
                self.output_dir = base / (category or "unknown")
                subset = [item for item, c in zip(items, categories) if c == category]
                super().on_test_batch_end(trainer, pl_module, outputs, subset, batch_idx, dataloader_idx)
        finally:
            self.output_dir = base


def _take(batch: Any, index: torch.Tensor) -> SimpleNamespace:
    """The rows ``index`` of every field a metric may read (tensors and lists), as a plain object."""
    fields: dict[str, Any] = {}
    for name in ("pred_score", "pred_label", "gt_label", "anomaly_map", "pred_mask", "gt_mask", "image_path",
                 "mask_path"):
        value = getattr(batch, name, None)
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            value = value.detach()[index.to(value.device)].cpu()
        elif isinstance(value, (list, tuple)):
            value = [value[i] for i in index.tolist()]
        fields[name] = value
    raw = getattr(batch, RAW_ATTRIBUTE, None)
    if raw:  # the raw outputs, for threshold-free metrics (see uad_plugins.engine.metrics)
        fields[RAW_ATTRIBUTE] = {k: v.detach()[index.to(v.device)].cpu() for k, v in raw.items()}
    return SimpleNamespace(**fields)


def _compute(metric: Any, category: str) -> float | None:
    """A metric's value as a float; ``None`` when it cannot be computed for this category (e.g. no masks)."""
    try:
        value = metric.compute()
    except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as err:
        logger.warning("%s could not be computed for category %r: %s", metric.name, category, err)
        return None
    if value is None:
        return None
    value = float(torch.as_tensor(value).float().mean())
    return None if math.isnan(value) else value
