"""Samples for the parity gate, calibration and the INT8 metric budget, taken from a datamodule.

Images are loaded with the dataset's own reader, then resized to the bundle's input size with antialiasing (as
the model's pre-processing does in training); masks are resized with nearest neighbour. Signal windows
(``SignalItem.signal [K, Q]``) are taken as the datamodule prepared them (windowed, filtered, normalised): that is
what the model, and so the bundle, takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uad_plugins.errors import DataError
from uad_plugins.protocols import modality_of

__all__ = ["SIGNAL_PREPARATION_KEYS", "Samples", "describe_signal_preparation", "take_samples"]

#: datamodule settings that decide what a signal window looks like (recorded in a signal bundle's manifest)
SIGNAL_PREPARATION_KEYS = ("normalize", "filter_band", "pre", "post", "channels", "leads", "crop", "sampling_rate",
                           "length", "stride", "n_leads")


@dataclass
class Samples:
    """A stack of inputs with labels ``[N]`` and masks when known.

    ``images`` holds the graph inputs: images ``[N, 3, H, W]`` in [0, 1] (masks ``[N, H, W]``) or, when
    ``modality`` is ``signal``, windows ``[N, K, Q]`` (masks ``[N, K, Q]``, point labels).
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    masks: torch.Tensor | None
    source: str
    modality: str = "image"

    @property
    def inputs(self) -> torch.Tensor:
        """The graph inputs (images or signal windows); the same tensor as ``images``."""
        return self.images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, index: torch.Tensor) -> Samples:
        """The samples at ``index`` (a long tensor), in that order."""
        return Samples(self.images[index], None if self.labels is None else self.labels[index],
                       None if self.masks is None else self.masks[index], self.source, self.modality)

    def subset(self, count: int) -> Samples:
        """``count`` samples spread evenly over the set (so both normal and anomalous ones are included)."""
        if count >= len(self):
            return self
        return self.take(torch.linspace(0, len(self) - 1, count).round().long())


def _is_signal_dataset(dataset: Any) -> bool:
    from uad_plugins.data.signals.dataset import SignalDataset

    if isinstance(dataset, SignalDataset) or modality_of(dataset) == "signal":
        return True
    return hasattr(dataset[0], "signal")  # another dataset of SignalItems


def _take_signals(dataset: Any, shape: tuple[int, int], limit: int | None, source: str,
                  normal_only: bool) -> Samples:
    """Signal windows ``[N, K, Q]``; with ``limit``, spread evenly over the set (every record contributes)."""
    import numpy as np

    labels_all = getattr(dataset, "labels", None)
    if labels_all is not None and len(labels_all) == len(dataset):
        candidates = np.flatnonzero(np.asarray(labels_all) == 0) if normal_only else np.arange(len(dataset))
    else:
        candidates = np.arange(len(dataset))
    if limit is not None and len(candidates) > limit:
        candidates = candidates[np.linspace(0, len(candidates) - 1, limit).round().astype(np.int64)]
    signals, labels, masks = [], [], []
    for index in candidates.tolist():
        item = dataset[index]
        label = int(item.gt_label) if item.gt_label is not None else 0
        if normal_only and label:
            continue
        signal = item.signal.float()
        if tuple(signal.shape) != tuple(shape):
            raise DataError(f"the {source} windows are {tuple(signal.shape)} (leads x samples), but the model takes "
                            f"{tuple(shape)}.", hint="Export with the data the model was trained on (the checkpoint "
                            "records it); the window settings (channels, pre/post, length) must match the model.")
        signals.append(signal)
        labels.append(label)
        masks.append(item.gt_mask.bool().reshape(shape) if item.gt_mask is not None
                     else torch.zeros(shape, dtype=torch.bool))
    if not signals:
        raise DataError(f"the {source} set has no usable signal windows.")
    return Samples(torch.stack(signals), torch.tensor(labels), torch.stack(masks), source, "signal")


def take_samples(dataset: Any, input_size: tuple[int, int], limit: int | None, *, source: str,
                 normal_only: bool = False) -> Samples:
    """Up to ``limit`` items of an anomalib dataset, in order (the dataset's own split is seeded).

    ``input_size`` is :func:`~uad_plugins.export.graph.input_size_of` of the model: ``(H, W)`` for images,
    ``(K, Q)`` for a signal dataset (whose windows must have that shape; with ``limit`` they are spread evenly
    over the set, so that every record contributes to calibration).
    """
    from torchvision.transforms.v2 import functional as F

    if dataset is None or len(dataset) == 0:
        raise DataError(f"the {source} set is empty: nothing to calibrate or check the export with.",
                        hint="Check --data (the checkpoint's recorded data is used when --data is not given).")
    if _is_signal_dataset(dataset):
        return _take_signals(dataset, (int(input_size[0]), int(input_size[1])), limit, source, normal_only)
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


def describe_signal_preparation(datamodule: Any) -> dict[str, Any]:
    """How the datamodule prepares a signal window (its class and window settings), for a bundle's manifest:
    a bundle takes windows prepared this way."""
    out: dict[str, Any] = {"datamodule": type(datamodule).__name__}
    for key in SIGNAL_PREPARATION_KEYS:
        if hasattr(datamodule, key):
            value = getattr(datamodule, key)
            out[key] = list(value) if isinstance(value, tuple) else value
    return out
