"""The pre-processor every backbone-based plugin uses: resize, then the backbone's own normalisation."""

from __future__ import annotations

from typing import Any

from uad_plugins.components.backbones import backbone_normalization

__all__ = ["backbone_pre_processor"]


def backbone_pre_processor(image_size: int | tuple[int, int] | None, backbone: str, default_size: int) -> Any:
    """An anomalib ``PreProcessor``: ``Resize`` (antialiased; square for an int, ``default_size`` for ``None``),
    then ``Normalize`` with the mean/std the backbone's pretrained weights expect."""
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    if image_size is None:
        size = (default_size, default_size)
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    mean, std = backbone_normalization(backbone)
    return PreProcessor(transform=Compose([Resize(size, antialias=True), Normalize(mean=list(mean), std=list(std))]))
