"""Metric selection (``plugin:<name>`` references -> an anomalib ``Evaluator``) and what the metrics see.

Threshold-free metrics are computed on the model's **raw** outputs. anomalib's ``PostProcessor`` runs before the
``Evaluator`` and normalises in place with ``((x - threshold) / (max - min) + 0.5).clamp(0, 1)``, min/max/threshold
coming from the (small) validation set: every test score outside that window becomes exactly 0 or 1, and the ties
pull AUROC, AUPRO, AP and F1-max towards 0.5 by an amount that differs per model and dataset. So the engine adds
:class:`RawOutputs`, a trainer callback that runs before the model's callbacks and keeps a copy of ``pred_score``
and ``anomaly_map`` on each test batch, and the :class:`RawScoreEvaluator` gives each metric the raw copy unless the
metric reads a thresholded field (``pred_label``, ``pred_mask``): those see the normalised, thresholded batch.

anomalib's image and pixel metrics are torchmetrics classification metrics, which take any score outside [0, 1]
for a logit and apply a sigmoid: raw scores in the hundreds (Padim's Mahalanobis distances, UniAD's maps) all
become 1.0 and every metric drops to 0.5. So raw outputs are not fed batch by batch: :class:`RawMetricFeed` keeps
them for the whole test set and, at the end, feeds the metrics the raw values min-max scaled over everything seen
(one monotonic map per field: ranks, and so AUROC, AP, F1-max and AUPRO, are unchanged; nothing saturates).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import torch
from anomalib.metrics import Evaluator
from lightning.pytorch import Callback

from uad_plugins.factory import create_metric, get_spec

__all__ = ["DEFAULT_METRICS", "RAW_FIELDS", "THRESHOLDED_FIELDS", "RawMetricFeed", "RawOutputs",
           "RawScoreEvaluator", "attach_metrics", "build_evaluator", "metric_input", "scale_to_unit"]

#: computed by `uad fit` / `uad test` when no --metrics are given
DEFAULT_METRICS: tuple[str, ...] = (
    "plugin:image_auroc",
    "plugin:pixel_auroc",
    "plugin:image_f1max",
    "plugin:pixel_f1max",
    "plugin:pixel_aupro",
    "plugin:image_precision",
    "plugin:image_recall",
    "plugin:image_f1",
)
#: outputs the post-processor normalises (and clamps) in place
RAW_FIELDS: tuple[str, ...] = ("pred_score", "anomaly_map")
#: outputs that exist only after thresholding
THRESHOLDED_FIELDS: tuple[str, ...] = ("pred_label", "pred_mask")
#: where :class:`RawOutputs` keeps the copy on a batch
RAW_ATTRIBUTE = "_uad_raw_outputs"


class _RawView:
    """A batch whose raw-output fields read the copies taken before post-processing; every other field (labels,
    masks, point validity, paths) reads the batch itself."""

    def __init__(self, batch: Any, raw: dict[str, Any]) -> None:
        self.__dict__["_batch"] = batch
        self.__dict__["_raw"] = raw

    def __getattr__(self, name: str) -> Any:
        raw = self.__dict__["_raw"]
        return raw[name] if name in raw else getattr(self.__dict__["_batch"], name)


def reads_thresholded(metric: Any) -> bool:
    """True for a metric that reads predicted labels or masks (it needs the post-processed batch)."""
    return any(field in THRESHOLDED_FIELDS for field in (getattr(metric, "fields", None) or ()))


def metric_input(batch: Any, metric: Any) -> Any:
    """What ``metric.update`` gets: the raw outputs for a threshold-free metric, the batch itself otherwise."""
    raw = getattr(batch, RAW_ATTRIBUTE, None)
    if not raw or reads_thresholded(metric):
        return batch
    return _RawView(batch, raw)


def keep_raw_outputs(source: Any, *targets: Any) -> None:
    """Copy ``source``'s raw output fields onto ``targets`` (see :data:`RAW_ATTRIBUTE`)."""
    raw = {}
    for field in RAW_FIELDS:
        value = getattr(source, field, None)
        if isinstance(value, torch.Tensor):
            raw[field] = value.detach().clone()
    for target in targets:
        try:
            setattr(target, RAW_ATTRIBUTE, raw)
        except AttributeError:  # a batch type that takes no new attributes: its metrics see what they saw before
            continue


def scale_to_unit(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``values`` mapped monotonically into [0, 1] by ``(x - low) / (high - low)`` (zeros when ``high == low``);
    non-finite values are left as they are."""
    values = values.float()
    if not high > low:
        return torch.where(torch.isfinite(values), torch.zeros_like(values), values)
    scaled = (values.double() - low) / (high - low)
    return torch.where(torch.isfinite(values), scaled.clamp(0.0, 1.0), values.double()).float()


def _finite_range(tensors: Sequence[torch.Tensor]) -> tuple[float, float] | None:
    lows, highs = [], []
    for tensor in tensors:
        finite = tensor[torch.isfinite(tensor)]
        if finite.numel():
            lows.append(float(finite.min()))
            highs.append(float(finite.max()))
    return (min(lows), max(highs)) if lows else None


class RawMetricFeed:
    """Keeps what threshold-free metrics read from each batch (raw outputs, labels, masks) and feeds the metrics
    once, at the end, with every raw field min-max scaled over all batches (see the module docstring)."""

    def __init__(self) -> None:
        self._stored: list[dict[str, Any]] = []

    def reset(self) -> None:
        self._stored = []

    def add(self, batch: Any, metrics: Sequence[Any]) -> None:
        """Keep the fields ``metrics`` read from ``batch`` (raw outputs where the engine kept them)."""
        raw = getattr(batch, RAW_ATTRIBUTE, None) or {}
        view = _RawView(batch, raw) if raw else batch
        fields = {f for m in metrics for f in (getattr(m, "fields", None) or ())}
        kept: dict[str, Any] = {}
        for name in fields:
            value = getattr(view, name, None)
            kept[name] = value.detach().cpu() if isinstance(value, torch.Tensor) else value
        self._stored.append(kept)

    def feed(self, metrics: Sequence[Any]) -> None:
        """Update ``metrics`` with everything kept, raw fields scaled into [0, 1]; then forget it."""
        ranges = {}
        for name in RAW_FIELDS:
            found = _finite_range([b[name].reshape(-1) for b in self._stored
                                   if isinstance(b.get(name), torch.Tensor)])
            if found is not None:
                ranges[name] = found
        for kept in self._stored:
            values = {k: (scale_to_unit(v, *ranges[k]) if k in ranges and isinstance(v, torch.Tensor) else v)
                      for k, v in kept.items()}
            batch = SimpleNamespace(**values)
            for metric in metrics:
                metric.update(batch)
        self._stored = []


class RawOutputs(Callback):
    """Keeps a copy of the raw outputs on every test batch, before the model's post-processor changes them (the
    engine adds it to the trainer's callbacks, which run before a model's own)."""

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        del trainer, pl_module, batch_idx, dataloader_idx
        source = outputs if outputs is not None and hasattr(outputs, "pred_score") else batch
        keep_raw_outputs(source, batch, source)


class RawScoreEvaluator(Evaluator):
    """anomalib's evaluator, feeding threshold-free metrics the raw outputs of the whole test set, scaled into
    [0, 1] (see the module docstring); metrics of predicted labels and masks read each batch as it comes.

    ``metric_sources`` are what the test metrics were built from (one each, in order: the resolved spec, or the
    class path; empty when the metrics were given as objects), which the run's ``plugins.json`` records.
    """

    def __init__(self, *args: Any, metric_sources: Sequence[Any] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metric_sources = tuple(metric_sources)

    @property
    def _raw_feed(self) -> RawMetricFeed:
        feed = self.__dict__.get("_uad_raw_feed")
        if feed is None:  # made on first use: copies and unpickled evaluators get their own too
            feed = self.__dict__["_uad_raw_feed"] = RawMetricFeed()
        return feed

    def _raw_metrics(self) -> list[Any]:
        return [m for m in self.test_metrics if not reads_thresholded(m)]

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        del trainer, pl_module
        self._raw_feed.reset()

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        del trainer, pl_module, outputs, batch_idx, dataloader_idx
        for metric in self.test_metrics:
            if reads_thresholded(metric):
                metric.update(batch)
        self._raw_feed.add(batch, self._raw_metrics())

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._raw_feed.feed(self._raw_metrics())
        super().on_test_epoch_end(trainer, pl_module)


def build_evaluator(metrics: Sequence[str] | None = None) -> RawScoreEvaluator:
    """A :class:`RawScoreEvaluator` whose test metrics are the given references (default :data:`DEFAULT_METRICS`)."""
    refs = list(metrics) if metrics else list(DEFAULT_METRICS)
    sources = [get_spec("metric", ref) or ref for ref in refs]  # each name resolved once
    return RawScoreEvaluator(test_metrics=[create_metric(source) for source in sources], metric_sources=sources)


def attach_metrics(model: Any, metrics: Sequence[str] | None = None) -> None:
    """Replace the model's evaluator with one computing ``metrics`` (threshold-free ones on raw outputs)."""
    model.evaluator = build_evaluator(metrics)
