"""Samples for the parity gate, calibration and the INT8 metric budget, taken from a datamodule.

Images are loaded with the dataset's own reader, then resized to the bundle's input size with antialiasing (as
the model's pre-processing does in training); masks are resized with nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uad_plugins.errors import DataError

__all__ = ["Samples", "take_samples"]


@dataclass
class Samples:
    """A stack of images ``[N, 3, H, W]`` in [0, 1], with labels ``[N]`` and masks ``[N, H, W]`` when known."""

    images: torch.Tensor
    labels: torch.Tensor | None
    masks: torch.Tensor | None
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, count: int) -> Samples:
        """``count`` samples spread evenly over the set (so both normal and anomalous ones are included)."""
        if count >= len(self):
            return self
        index = torch.linspace(0, len(self) - 1, count).round().long()
        return Samples(self.images[index], None if self.labels is None else self.labels[index],
                       None if self.masks is None else self.masks[index], self.source)


def take_samples(dataset: Any, input_size: tuple[int, int], limit: int | None, *, source: str,
                 normal_only: bool = False) -> Samples:
    """Up to ``limit`` items of an anomalib dataset, in order (the dataset's own split is seeded)."""
    from torchvision.transforms.v2 import functional as F

    if dataset is None or len(dataset) == 0:
        raise DataError(f"the {source} set is empty: nothing to calibrate or check the export with.",
                        hint="Check --data (the checkpoint's recorded data is used when --data is not given).")
    images, labels, masks = [], [], []
    for index in range(len(dataset)):
        item = dataset[index]
        label = int(item.gt_label) if item.gt_label is not None else 0
        if normal_only and label:
            continue
        image = item.image.float()
        if image.max() > 1.5:
            image = image / 255.0
        images.append(F.resize(image, list(input_size), antialias=True).clamp(0, 1))
        labels.append(label)
        if item.gt_mask is not None:
            mask = item.gt_mask.reshape(1, *item.gt_mask.shape[-2:]).float()
            masks.append(F.resize(mask, list(input_size), interpolation=F.InterpolationMode.NEAREST)[0] > 0.5)
        else:
            masks.append(torch.zeros(input_size, dtype=torch.bool))
        if limit is not None and len(images) >= limit:
            break
    if not images:
        raise DataError(f"the {source} set has no usable images.")
    return Samples(torch.stack(images), torch.tensor(labels), torch.stack(masks), source)
