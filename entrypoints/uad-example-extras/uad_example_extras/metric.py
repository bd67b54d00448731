"""``plugin:image_tpr_at_fpr``: the true-positive rate at a fixed false-positive rate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from anomalib.metrics import AnomalibMetric
from torchmetrics import Metric

from uad_plugins.errors import ConfigError


class _TprAtFprState(Metric):
    """Keeps every (score, label); computes the share of anomalies scored above the normals' (1 - fpr) quantile."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, fpr: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(fpr) < 1.0:
            raise ConfigError(f"image_tpr_at_fpr: fpr must be in [0, 1), got {fpr}.")
        self.fpr = float(fpr)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(torch.as_tensor(preds).detach().reshape(-1).float().cpu())
        self.target.append(torch.as_tensor(target).detach().reshape(-1).bool().cpu())

    def compute(self) -> torch.Tensor:
        preds = torch.cat(self.preds) if isinstance(self.preds, list) else self.preds
        target = torch.cat(self.target) if isinstance(self.target, list) else self.target
        normal, anomalous = preds[~target], preds[target]
        if len(normal) == 0 or len(anomalous) == 0:
            return torch.tensor(float("nan"))
        # the smallest threshold that flags at most fpr of the normal images (scores strictly above it are flagged)
        allowed = int(self.fpr * len(normal))
        threshold = torch.sort(normal, descending=True).values[allowed] if allowed < len(normal) else normal.min()
        return (anomalous > threshold).float().mean()


class TprAtFpr(AnomalibMetric, _TprAtFprState):
    """An anomalib metric over :class:`_TprAtFprState`; logged as ``prefix + "TPR@FPR"`` (e.g. ``image_TPR@FPR``).

    Args:
        fields: batch fields read (default ``pred_score``, ``gt_label``).
        prefix: logged-name prefix.
        strict: a batch without the fields is an error.
        fpr: the largest share of normal images that may be flagged.
    """

    def __init__(self, fields: Sequence[str] | None = None, prefix: str = "", strict: bool = True,
                 fpr: float = 0.05, **kwargs: Any) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, fpr=fpr, **kwargs)
        self.name = f"{prefix}TPR@FPR"
