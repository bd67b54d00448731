"""A frozen multi-scale backbone: chosen stages resized to one token grid and concatenated (UniAD's MFCN neck)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uad_plugins.components.backbones import create_feature_extractor
from uad_plugins.errors import ConfigError

__all__ = ["MultiScaleFeatures"]


class MultiScaleFeatures(nn.Module):
    """Frozen timm stages, each bilinearly resized (``align_corners=True``) to the grid of ``stride``, then concat.

    Args:
        backbone: timm model name.
        layers: feature module names (e.g. ``blocks.0``-``blocks.4`` of an EfficientNet: strides 2, 4, 8, 16).
        pretrained: ``True`` (ImageNet weights), ``False`` (random init) or a local weights file.
        stride: stride of the common grid; one of the layers must have it (default: the deepest layer's).

    Attributes:
        channels: total channels of the concatenated map.
        stride: stride of the output grid.
    """

    def __init__(self, backbone: str, layers: Sequence[str], pretrained: bool | str | os.PathLike[str] = True,
                 stride: int | None = None) -> None:
        super().__init__()
        self.extractor = create_feature_extractor(backbone, list(layers), pretrained)
        reductions = list(self.extractor.reductions)
        self.stride = int(stride) if stride is not None else max(reductions)
        if self.stride not in reductions:
            raise ConfigError(f"Backbone '{backbone}' layers {list(layers)} have strides {reductions}; none is "
                              f"the requested grid stride {self.stride}.",
                              hint="Include a layer with that stride, or choose a stride from the list.")
        self.reference = reductions.index(self.stride)
        self.channels = int(sum(self.extractor.channels))

    def grid_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """The token grid ``(h, w)`` for an input of ``image_size`` (one probe forward on zeros)."""
        with torch.no_grad():
            maps = self.extractor(torch.zeros(1, 3, *image_size))
        return int(maps[self.reference].shape[-2]), int(maps[self.reference].shape[-1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]``: all stages on the reference grid, concatenated along channels."""
        maps = self.extractor(images)
        size = (maps[self.reference].shape[-2], maps[self.reference].shape[-1])
        aligned = [m if i == self.reference else F.interpolate(m, size=size, mode="bilinear", align_corners=True)
                   for i, m in enumerate(maps)]
        return torch.cat(aligned, dim=1)
