"""Anomaly maps and image scores shared by the reconstruction models (UniAD, OneNIP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["max_avgpool_score", "reconstruction_map"]


def reconstruction_map(features: torch.Tensor, reconstruction: torch.Tensor,
                       size: tuple[int, int]) -> torch.Tensor:
    """Per-location L2 error ``[B, 1, h, w]`` upsampled bilinearly (``align_corners=True``) to ``size``."""
    error = torch.sqrt(((reconstruction - features) ** 2).sum(dim=1, keepdim=True))
    return F.interpolate(error, size=size, mode="bilinear", align_corners=True)


def max_avgpool_score(anomaly_map: torch.Tensor, kernel: int) -> torch.Tensor:
    """Image score: max of the ``kernel x kernel`` average-pooled map (stride 1, no padding), ``[B]``."""
    return F.avg_pool2d(anomaly_map, kernel_size=kernel, stride=1).amax(dim=(1, 2, 3))
