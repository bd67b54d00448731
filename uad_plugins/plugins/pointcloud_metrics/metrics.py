"""Point-level AUROC and AUPRO for point clouds, as anomalib metrics that read a :class:`PointCloudBatch`.

Invalid points (``batch.valid`` False: ``(0, 0, 0)`` points and batch padding) are left out of every count.

- :class:`PointAUROC`: area under the ROC curve over all valid points of all clouds, exact (rank statistic with
  tied scores counted half), for any real-valued scores (no sigmoid, no binning).
- :class:`PointAUPRO`: area under the per-region-overlap (PRO) curve up to a false-positive rate ``fpr_limit``
  (0.3 as in MVTec AD / MVTec 3D-AD), divided by ``fpr_limit``. Regions are the 8-connected components of each
  organised cloud's ground-truth mask on its ``H x W`` grid; a region's overlap at a threshold is the fraction of
  its valid points scored at or above it, the PRO is the mean over all regions of all clouds, and the FPR is the
  fraction of valid normal points at or above it. The curve is linearly interpolated at ``fpr_limit``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from anomalib.metrics import AnomalibMetric
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from uad_plugins.errors import DataError

__all__ = ["PointAUPRO", "PointAUROC", "aupro_from_regions", "auroc", "region_sizes"]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties); NaN with a warning if one class is absent."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels, dtype=bool).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        warnings.warn(f"point AUROC is undefined with {n_pos} anomalous and {n_neg} normal valid points; "
                      "returning NaN.", RuntimeWarning, stacklevel=2)
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def region_sizes(gt_mask: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """Per point of one organised cloud ``[H, W]``: the number of valid points in its ground-truth region (8-connected
    components of ``gt_mask``), 0 for normal points; and the number of regions that have valid points."""
    from scipy.ndimage import label

    labels, count = label(gt_mask, structure=np.ones((3, 3), dtype=int))
    labels = np.where(valid, labels, 0)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return sizes[labels], int((sizes[1:] > 0).sum())


def aupro_from_regions(scores: np.ndarray, sizes: np.ndarray, n_regions: int, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` from per-point ``scores`` and region ``sizes``.

    ``sizes`` is the size of the point's region (0 for a normal point); all arrays hold valid points only. Each
    anomalous point weighs ``1 / (size * n_regions)`` in the PRO, each normal point ``1 / n_normal`` in the FPR, so
    one sweep over the scores sorted high to low gives the whole curve (thresholds at every distinct score).
    """
    scores, sizes = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(sizes).ravel()
    normal = sizes == 0
    n_normal = int(normal.sum())
    if n_regions == 0 or n_normal == 0:
        warnings.warn(f"point AUPRO is undefined with {n_regions} anomalous regions and {n_normal} normal valid "
                      "points; returning NaN.", RuntimeWarning, stacklevel=2)
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    fp = np.where(normal[order], 1.0 / n_normal, 0.0)
    with np.errstate(divide="ignore"):
        tp = np.where(normal[order], 0.0, 1.0 / (np.maximum(sizes[order], 1) * n_regions))
    fpr, pro = np.cumsum(fp), np.cumsum(tp)
    last = np.r_[s[1:] != s[:-1], True]  # the last point of every run of tied scores
    fpr = np.r_[0.0, np.minimum(fpr[last], 1.0)]
    pro = np.r_[0.0, np.minimum(pro[last], 1.0)]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit and keep.sum() < len(fpr):  # interpolate the curve at fpr_limit
        i = int(keep.sum())
        x0, x1, y0, y1 = fpr[i - 1], fpr[i], pro[i - 1], pro[i]
        x = np.r_[x, fpr_limit]
        y = np.r_[y, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1])) / 2.0 / fpr_limit)  # trapezoid rule


class _PointMetric(AnomalibMetric, Metric):
    """Reads ``fields`` (scores, targets) plus ``valid`` and ``grid_shape`` from a point-cloud batch."""

    default_fields = ("anomaly_map", "gt_mask")
    full_state_update = False
    display_name = ""

    def __init__(self, fields: Any = None, prefix: str = "", strict: bool = True, **kwargs: Any) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, **kwargs)
        self.name = prefix + self.display_name

    def _values(self, batch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(scores [B, N], targets [B, N], valid [B, N])`` as numpy, or None when a field is missing."""
        for key in self.fields:
            if getattr(batch, key, None) is None:
                self._update_count -= 1
                if not self.strict:
                    return None
                raise DataError(f"{type(self).__name__} needs the batch field {key!r}, which is missing or None.",
                                hint="Give per-point scores (anomaly_map) and ground truth (gt_mask).")
        scores, target = (torch.as_tensor(getattr(batch, key)) for key in self.fields[:2])
        valid = getattr(batch, "valid", None)
        valid = torch.ones_like(target, dtype=torch.bool) if valid is None else torch.as_tensor(valid).bool()
        arrays = [t.detach().cpu().reshape(t.shape[0], -1).numpy() if t.ndim > 1 else
                  t.detach().cpu().reshape(1, -1).numpy() for t in (scores, target, valid)]
        scores, target, valid = arrays[0].astype(np.float64), arrays[1].astype(bool), arrays[2].astype(bool)
        if not scores.shape == target.shape == valid.shape:
            raise DataError(f"{type(self).__name__}: scores {scores.shape}, ground truth {target.shape} and valid "
                            f"{valid.shape} differ in shape.")
        if not np.isfinite(scores[valid]).all():
            raise DataError(f"{type(self).__name__}: the scores of valid points contain NaN or inf.",
                            hint="Check the model's output, or mark those points invalid.")
        return scores, target, valid


class PointAUROC(_PointMetric):
    """Point-level AUROC over the valid points of every cloud seen (reported as ``<prefix>AUROC``).

    Example:
        >>> metric = PointAUROC(fields=["anomaly_map", "gt_mask"], prefix="point_")   # doctest: +SKIP
        >>> metric.update(batch); metric.compute()   # doctest: +SKIP
        tensor(0.9731)
    """

    display_name = "AUROC"

    def __init__(self, fields: Any = None, prefix: str = "", strict: bool = True, **kwargs: Any) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, **kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:
        values = self._values(batch)
        if values is None:
            return
        scores, target, valid = values
        self.scores.append(torch.from_numpy(scores[valid]))
        self.targets.append(torch.from_numpy(target[valid]))

    def compute(self) -> torch.Tensor:
        if self._update_count == 0 and not self.strict:
            return None  # type: ignore[return-value]
        if not self.scores:
            raise DataError("PointAUROC.compute() called before any update.")
        value = auroc(dim_zero_cat(self.scores).numpy(), dim_zero_cat(self.targets).numpy())
        return torch.tensor(value, dtype=torch.float32)


class PointAUPRO(_PointMetric):
    """Point-level AUPRO up to ``fpr_limit`` on organised clouds (reported as ``<prefix>AUPRO``).

    The batch needs ``grid_shape`` (or ``[B, H, W]`` maps) so that regions can be found on the grid.
    """

    display_name = "AUPRO"

    def __init__(self, fields: Any = None, prefix: str = "", strict: bool = True, fpr_limit: float = 0.3,
                 **kwargs: Any) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, **kwargs)
        if not 0.0 < float(fpr_limit) <= 1.0:
            raise DataError(f"PointAUPRO: fpr_limit must be in (0, 1], got {fpr_limit}.")
        self.fpr_limit = float(fpr_limit)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("sizes", default=[], dist_reduce_fx="cat")
        self.add_state("n_regions", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, batch: Any, *args: Any, **kwargs: Any) -> None:
        grid = getattr(batch, "grid_shape", None)
        raw = getattr(batch, self.fields[1], None)
        if grid is None and raw is not None and torch.as_tensor(raw).ndim == 3:
            grid = tuple(torch.as_tensor(raw).shape[-2:])
        values = self._values(batch)
        if values is None:
            return
        scores, target, valid = values
        if grid is None:
            raise DataError("PointAUPRO needs organised clouds: the batch has no grid_shape.",
                            hint="AUPRO finds anomalous regions on the H x W grid of organised clouds (MVTec 3D-AD "
                                 "xyz TIFFs); use point AUROC for unorganised clouds.")
        h, w = int(grid[0]), int(grid[1])
        if h * w != scores.shape[1]:
            raise DataError(f"PointAUPRO: grid_shape {h}x{w} does not match {scores.shape[1]} points per cloud.")
        for s, t, v in zip(scores, target, valid, strict=True):
            sizes, count = region_sizes(t.reshape(h, w), v.reshape(h, w))
            self.scores.append(torch.from_numpy(s[v]))
            self.sizes.append(torch.from_numpy(sizes.ravel()[v]))
            self.n_regions += count

    def compute(self) -> torch.Tensor:
        if self._update_count == 0 and not self.strict:
            return None  # type: ignore[return-value]
        if not self.scores:
            raise DataError("PointAUPRO.compute() called before any update.")
        value = aupro_from_regions(dim_zero_cat(self.scores).numpy(), dim_zero_cat(self.sizes).numpy(),
                                   int(self.n_regions), self.fpr_limit)
        return torch.tensor(value, dtype=torch.float32)
