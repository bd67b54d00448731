"""Threshold rules: how the image and pixel thresholds are fitted on the (honest) validation set.

Two rules, chosen with ``UadEngine(threshold=...)`` / ``uad fit --threshold``:

- ``f1_adaptive`` (default, anomalib's): the score that maximises F1 on the validation set, whose anomalies are
  synthetic unless the user brings a validation folder. Where synthetic anomalies are stronger than the real ones,
  the threshold sits high: few false alarms, but real defects are missed.
- ``normal_quantile``: the ``1 - false_alarm_rate`` quantile of the scores of the validation set's normal images
  (and of its normal pixels for the pixel threshold). It uses only real normal data, so it holds the false-alarm
  rate an operator asks for, whatever the defects look like; how many defects it catches is not controlled.

Threshold-free metrics (AUROC, AUPRO, AP, F1-max) do not depend on the rule; precision, recall and F1 at the
threshold, labels, masks and the normalised scores do.
"""

from __future__ import annotations

from typing import Any

import torch
from anomalib.metrics import AnomalibMetric
from anomalib.metrics.threshold import Threshold

from uad_plugins.errors import ConfigError

__all__ = ["THRESHOLD_RULES", "NormalQuantileThreshold", "apply_threshold_rule", "check_threshold_rule"]

#: the threshold rules the engine offers (the first is the default)
THRESHOLD_RULES = ("f1_adaptive", "normal_quantile")
#: at most this many normal values are kept per update (pixels): a uniform subsample keeps memory bounded
MAX_VALUES_PER_UPDATE = 65536


def check_threshold_rule(rule: str, false_alarm_rate: float) -> None:
    """A clear error for an unknown rule or a false-alarm rate outside (0, 1)."""
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"threshold must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}.",
                          hint="f1_adaptive (default) maximises F1 on validation; normal_quantile keeps the "
                               "false-alarm rate of validation normals at --false_alarm_rate.")
    if not 0.0 < float(false_alarm_rate) < 1.0:
        raise ConfigError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate!r}.",
                          hint="e.g. 0.01 for one false alarm in a hundred normal images.")


class _NormalQuantileThreshold(Threshold):
    """The ``1 - false_alarm_rate`` quantile of the scores whose target is 0 (normal)."""

    def __init__(self, false_alarm_rate: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.false_alarm_rate = float(false_alarm_rate)
        self.add_state("normal_scores", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Keep the scores of normal samples (pixels)."""
        values = preds.detach().reshape(-1).float()
        normal = values[~target.reshape(-1).bool()] if target is not None else values
        normal = normal[torch.isfinite(normal)]
        if normal.numel() > MAX_VALUES_PER_UPDATE:  # pixels: an even subsample, deterministic
            step = normal.numel() / MAX_VALUES_PER_UPDATE
            normal = normal[(torch.arange(MAX_VALUES_PER_UPDATE) * step).long()]
        self.normal_scores.append(normal.cpu())

    def compute(self) -> torch.Tensor:
        """The quantile (NaN when no normal score was seen: anomalib then leaves labels unset)."""
        scores = torch.cat(self.normal_scores) if self.normal_scores else torch.empty(0)
        if scores.numel() == 0:
            return torch.tensor(float("nan"))
        # the smallest score that at most false_alarm_rate of the normal scores exceed
        allowed = int(self.false_alarm_rate * scores.numel())
        rank = max(1, scores.numel() - allowed)
        return torch.kthvalue(scores, rank).values


class NormalQuantileThreshold(AnomalibMetric, _NormalQuantileThreshold):  # type: ignore[misc]
    """Batch-reading form of the normal-quantile threshold (``fields``: score field, target field)."""


def apply_threshold_rule(model: Any, rule: str, false_alarm_rate: float = 0.01) -> bool:
    """Make ``model``'s anomalib post-processor fit its thresholds with ``rule``; True when it was applied (False for
    a model whose post-processor has no threshold metrics, or for the default rule, which anomalib builds)."""
    check_threshold_rule(rule, false_alarm_rate)
    post = getattr(model, "post_processor", None)
    if post is None or not hasattr(post, "_image_threshold_metric"):
        return False
    if rule == "f1_adaptive":
        from anomalib.metrics import F1AdaptiveThreshold

        if isinstance(post._image_threshold_metric, NormalQuantileThreshold):  # back to anomalib's
            post._image_threshold_metric = F1AdaptiveThreshold(fields=["pred_score", "gt_label"], strict=False)
            post._pixel_threshold_metric = F1AdaptiveThreshold(fields=["anomaly_map", "gt_mask"], strict=False)
        return False
    post._image_threshold_metric = NormalQuantileThreshold(false_alarm_rate=false_alarm_rate,
                                                           fields=["pred_score", "gt_label"],
                                                           strict=False)
    post._pixel_threshold_metric = NormalQuantileThreshold(false_alarm_rate=false_alarm_rate,
                                                           fields=["anomaly_map", "gt_mask"],
                                                           strict=False)
    return True
