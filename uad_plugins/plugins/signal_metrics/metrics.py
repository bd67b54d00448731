"""Exact, rank-based signal metrics: sample-level AUROC and AP, point-level AUROC (optionally smoothed).

They read anomalib batch fields (``pred_score``/``gt_label``, ``anomaly_map``/``gt_mask``) like anomalib's metrics,
but compute on the raw values: no sigmoid is applied to scores outside [0, 1] (torchmetrics does that, which ties
large raw scores at 1.0) and ties get average ranks. The point-level AUROC can smooth each lead's map along time with
a Gaussian (ECGAD smooths with sigma = 15 samples) and crop a time range before all points x leads x windows are
ranked together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from anomalib.metrics import AnomalibMetric
from torchmetrics import Metric

from uad_plugins.errors import ConfigError

__all__ = ["SignalAP", "SignalAUROC", "SignalPointAUROC", "average_precision", "gaussian_smooth_1d", "rank_auroc"]

logger = logging.getLogger(__name__)


def rank_auroc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AUROC as the Mann-Whitney statistic with average ranks for ties; NaN when one class is missing."""
    scores = scores.reshape(-1).double()
    labels = labels.reshape(-1).bool()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(float("nan"))
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average_rank = ends - (counts.double() - 1.0) / 2.0  # 1-based average rank of each tie group
    ranks = torch.empty_like(scores)
    ranks[order] = average_rank[inverse]
    auc = (ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return auc.float()


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (scikit-learn's definition)."""
    scores = scores.reshape(-1).double()
    labels = labels.reshape(-1).double()
    n_pos = float(labels.sum())
    if n_pos == 0:
        return torch.tensor(float("nan"))
    order = torch.argsort(scores, descending=True)
    s, y = scores[order], labels[order]
    tp = torch.cumsum(y, 0)
    fp = torch.cumsum(1.0 - y, 0)
    last = torch.ones_like(s, dtype=torch.bool)  # the last position of each group of tied scores
    last[:-1] = s[1:] != s[:-1]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    previous = torch.cat([torch.zeros(1, dtype=recall.dtype), recall[:-1]])
    return ((recall - previous) * precision).sum().float()


def gaussian_smooth_1d(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Smooth ``[..., Q]`` along the last axis with a Gaussian of ``sigma`` samples (mirror padding)."""
    if sigma <= 0:
        return maps
    q = maps.shape[-1]
    radius = min(int(truncate * sigma + 0.5), q - 1)
    if radius < 1:
        return maps
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.dtype if maps.is_floating_point() else torch.float32)
    flat = maps.reshape(-1, 1, q).to(kernel.dtype)
    padded = F.pad(flat, (radius, radius), mode="reflect")
    return F.conv1d(padded, kernel.view(1, 1, -1)).reshape(maps.shape)


class _RankState(Metric):
    """Keeps every (score, label) pair; subclasses compute an exact rank statistic from them."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def _prepare(self, preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return preds, target

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = self._prepare(torch.as_tensor(preds).detach(), torch.as_tensor(target).detach())
        self.preds.append(preds.reshape(-1).float().cpu())
        self.target.append(target.reshape(-1).bool().cpu())

    def _statistic(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(self) -> torch.Tensor:
        preds = torch.cat(self.preds) if isinstance(self.preds, list) else self.preds
        target = torch.cat(self.target) if isinstance(self.target, list) else self.target
        value = self._statistic(preds, target)
        if math.isnan(float(value)):
            logger.warning("%s is undefined: the labels hold one class only.", getattr(self, "name", type(self)))
        return value


class _RankMetric(AnomalibMetric, _RankState):
    """An anomalib metric (reads batch fields) over :class:`_RankState`; logged as ``prefix + short_name``."""

    #: the logged name without the prefix (e.g. ``"AUROC"``)
    short_name = ""

    def __init__(self, fields: Sequence[str] | None = None, prefix: str = "", strict: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, **kwargs)
        self.name = prefix + self.short_name

    def _wrap_compute(self, compute: Any) -> Any:
        """A non-strict metric that never saw its fields (no point masks) gives ``None`` without a warning."""
        wrapped = super()._wrap_compute(compute)

        def quiet(*args: Any, **kwargs: Any) -> Any:
            if self._update_count == 0 and not self.strict:
                return None
            return wrapped(*args, **kwargs)

        return quiet


class SignalAUROC(_RankMetric):
    """Sample-level AUROC (exact, ties averaged) of ``pred_score`` against ``gt_label``."""

    short_name = "AUROC"

    def _statistic(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return rank_auroc(preds, target)


class SignalAP(_RankMetric):
    """Sample-level average precision of ``pred_score`` against ``gt_label``."""

    short_name = "AP"

    def _statistic(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return average_precision(preds, target)


class SignalPointAUROC(_RankMetric):
    """Point-level AUROC of ``anomaly_map [B, K, Q]`` against ``gt_mask [B, K, Q]`` over every point of every lead
    of every window, after optional Gaussian smoothing along time per lead and an optional time crop (ECGAD:
    ``sigma=15``, crop 100-4900 of the 5000-sample record).

    Args:
        sigma: Gaussian standard deviation in samples (0: no smoothing).
        crop: ``[start, end]`` time range kept, or ``None``.
        fields, prefix, strict: anomalib metric options.
    """

    short_name = "AUROC"

    def __init__(self, fields: Sequence[str] | None = ("anomaly_map", "gt_mask"), prefix: str = "point_",
                 strict: bool = False, sigma: float = 0.0, crop: Sequence[int] | None = None, **kwargs: Any) -> None:
        if not isinstance(sigma, (int, float)) or not math.isfinite(float(sigma)) or float(sigma) < 0:
            raise ConfigError(f"signal_point_auroc: sigma must be a number >= 0 (samples), got {sigma!r}.")
        if crop is not None:
            crop = [int(c) for c in crop]
            if len(crop) != 2 or not 0 <= crop[0] < crop[1]:
                raise ConfigError(f"signal_point_auroc: crop must be [start, end) with 0 <= start < end, got {crop}.")
        super().__init__(fields=list(fields or ("anomaly_map", "gt_mask")), prefix=prefix, strict=strict, **kwargs)
        self.sigma = float(sigma)
        self.crop = None if crop is None else (crop[0], crop[1])

    def _prepare(self, preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(preds.shape) != tuple(target.shape):
            raise ValueError(f"{self.name}: anomaly_map {tuple(preds.shape)} and gt_mask {tuple(target.shape)} differ.")
        preds = gaussian_smooth_1d(preds.float(), self.sigma)
        if self.crop is not None:
            if self.crop[1] > preds.shape[-1]:
                raise ValueError(f"{self.name}: crop {list(self.crop)} exceeds the map length {preds.shape[-1]}.")
            preds = preds[..., self.crop[0]:self.crop[1]]
            target = target[..., self.crop[0]:self.crop[1]]
        return preds, target

    def _statistic(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return rank_auroc(preds, target)
