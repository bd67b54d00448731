"""Anomaly maps, their smoothing and image scores shared by the built-in models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GaussianBlur2d", "gaussian_kernel1d", "max_avgpool_score", "reconstruction_map"]


def reconstruction_map(features: torch.Tensor, reconstruction: torch.Tensor,
                       size: tuple[int, int]) -> torch.Tensor:
    """Per-location L2 error ``[B, 1, h, w]`` upsampled bilinearly (``align_corners=True``) to ``size``."""
    error = torch.sqrt(((reconstruction - features) ** 2).sum(dim=1, keepdim=True))
    return F.interpolate(error, size=size, mode="bilinear", align_corners=True)


def max_avgpool_score(anomaly_map: torch.Tensor, kernel: int) -> torch.Tensor:
    """Image score: max of the ``kernel x kernel`` average-pooled map (stride 1, no padding), ``[B]``."""
    return F.avg_pool2d(anomaly_map, kernel_size=kernel, stride=1).amax(dim=(1, 2, 3))


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``int(truncate * sigma + 0.5)`` (scipy's ``gaussian_filter`` support)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).float()


class GaussianBlur2d(nn.Module):
    """Separable Gaussian smoothing of ``[B, 1, H, W]`` maps with fixed conv2d kernels (exportable).

    Borders are padded by edge replication (close to scipy's ``reflect`` mode right at the border).
    ``sigma = 0`` is the identity.
    """

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = float(sigma)
        kernel = gaussian_kernel1d(sigma) if sigma > 0 else torch.ones(1)
        self.radius = (kernel.numel() - 1) // 2
        self.register_buffer("kernel_h", kernel.view(1, 1, 1, -1), persistent=False)
        self.register_buffer("kernel_v", kernel.view(1, 1, -1, 1), persistent=False)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Smoothed maps, same shape as the input."""
        if self.radius == 0:
            return maps
        r = self.radius
        maps = F.conv2d(F.pad(maps, (r, r, 0, 0), mode="replicate"), self.kernel_h.to(maps.dtype))
        return F.conv2d(F.pad(maps, (0, 0, r, r), mode="replicate"), self.kernel_v.to(maps.dtype))
