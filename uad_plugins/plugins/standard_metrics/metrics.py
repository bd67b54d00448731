"""Precision and recall at the chosen threshold, as anomalib metrics (anomalib ships F1Score but not these two).

They read thresholded fields (``pred_label``/``gt_label`` by default), so the evaluator gives them the
post-processed batch: the labels the model would output in production, at the threshold fitted on validation.
"""

from __future__ import annotations

from anomalib.metrics import AnomalibMetric
from torchmetrics.classification import BinaryPrecision, BinaryRecall

__all__ = ["Precision", "Recall"]


class Precision(AnomalibMetric, BinaryPrecision):
    """Binary precision of predicted labels (or masks): TP / (TP + FP); logged as ``<prefix>Precision``."""


class Recall(AnomalibMetric, BinaryRecall):
    """Binary recall of predicted labels (or masks): TP / (TP + FN); logged as ``<prefix>Recall``."""
