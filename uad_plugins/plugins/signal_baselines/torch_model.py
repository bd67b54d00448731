"""The trivial signal baselines as a plain ``nn.Module``: no learning, statistics of the training windows.

Shapes: ``x [B, K, Q]``. ``kind``:

* ``mean_distance``: map = squared difference to the mean training window, score = its mean;
* ``std``: map = squared deviation from the window's own per-lead mean, score = the per-lead standard deviation
  averaged over leads (needs no training data);
* ``nearest``: map = squared difference to the nearest training window (Euclidean), score = the mean squared
  distance to it (1-nearest-neighbour).

Eval is traceable by ``torch.export`` with a dynamic batch (a matrix product and an ``argmin``).
"""

from __future__ import annotations

from typing import Any

import torch
from anomalib.data import InferenceBatch
from torch import nn

__all__ = ["KINDS", "SignalBaselineModel"]

KINDS = ("mean_distance", "std", "nearest")


class SignalBaselineModel(nn.Module):
    """A statistics-only anomaly scorer of signal windows (see the module docstring).

    Args:
        kind: ``mean_distance``, ``std`` or ``nearest``.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown baseline kind {kind!r}; use one of {KINDS}")
        self.kind = kind
        self.register_buffer("mean", torch.zeros(0))  # [K, Q] once fitted
        self.register_buffer("bank", torch.zeros(0))  # [N, K * Q] (nearest only)
        self.register_buffer("bank_sq", torch.zeros(0))  # [N] squared norms of the bank

    @property
    def fitted(self) -> bool:
        return self.mean.numel() > 0

    @torch.no_grad()
    def fit(self, windows: torch.Tensor) -> None:
        """Keep the statistics of the training windows ``[N, K, Q]``."""
        windows = windows.detach().float()
        self.mean = windows.mean(0).to(self.mean.device)
        if self.kind == "nearest":
            flat = windows.reshape(len(windows), -1).to(self.mean.device)
            self.bank, self.bank_sq = flat, (flat ** 2).sum(1)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Buffers take the size of the checkpoint's (they are empty before fitting)."""
        for name in ("mean", "bank", "bank_sq"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> InferenceBatch:
        """``InferenceBatch(pred_score [B], anomaly_map [B, K, Q])``."""
        if self.kind == "std":
            centred = (x - x.mean(dim=-1, keepdim=True)) ** 2
            return InferenceBatch(pred_score=centred.mean(dim=-1).sqrt().mean(dim=-1), anomaly_map=centred)
        if self.kind == "mean_distance":
            amap = (x - self.mean[None]) ** 2
            return InferenceBatch(pred_score=amap.flatten(1).mean(dim=1), anomaly_map=amap)
        flat = x.reshape(x.shape[0], -1)
        dist = (flat ** 2).sum(1, keepdim=True) + self.bank_sq[None] - 2.0 * flat @ self.bank.T  # [B, N]
        nearest = self.bank[torch.argmin(dist, dim=1)]  # [B, K * Q]
        amap = ((flat - nearest) ** 2).reshape(x.shape)
        return InferenceBatch(pred_score=amap.flatten(1).mean(dim=1), anomaly_map=amap)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, fitted={self.fitted}, bank={tuple(self.bank.shape)}"
