"""Honest validation: thresholds and model selection never see the test set.

:func:`apply_synthetic_validation` holds back a seeded share of the normal training images and turns part of them
into anomalies with a :class:`~uad_plugins.synth.base.Synthesizer`; the result becomes the datamodule's
validation set. The anomalous images and masks are written as PNG files, so the set is reproducible and can be
inspected.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from uad_plugins.data.checks import read_rgb_image
from uad_plugins.errors import ConfigError, DataError

if TYPE_CHECKING:
    from uad_plugins.synth.base import Synthesizer

__all__ = ["apply_synthetic_validation", "needs_honest_validation"]

#: how many seeds are tried per image before a synthesizer that keeps returning empty masks is given up on
MAX_TRIES = 5


def _val_split_mode(datamodule: Any) -> Any:
    from anomalib.data.utils import ValSplitMode

    mode = getattr(datamodule, "val_split_mode", None)
    return ValSplitMode(mode) if mode else ValSplitMode.NONE


def needs_honest_validation(datamodule: Any) -> bool:
    """True when the datamodule's own validation set would come from the test set, is anomalib's unseeded
    synthetic set, or is missing; False for a user-supplied (``from_dir``) or train-split (``from_train``) one,
    and once :func:`apply_synthetic_validation` has run on it.
    """
    from anomalib.data.utils import ValSplitMode

    if getattr(datamodule, "uad_validation", None) is not None:
        return False
    return _val_split_mode(datamodule) in {
        ValSplitMode.SAME_AS_TEST, ValSplitMode.FROM_TEST, ValSplitMode.SYNTHETIC, ValSplitMode.NONE}


def _undo_anomalib_val_split(datamodule: Any) -> None:
    """Give back what anomalib's own validation split took from the test or train set."""
    from anomalib.data.utils import ValSplitMode
    from anomalib.data.utils.synthetic import SyntheticAnomalyDataset

    val = getattr(datamodule, "val_data", None)
    if val is None:
        return
    mode = _val_split_mode(datamodule)
    if mode == ValSplitMode.FROM_TEST and getattr(datamodule, "test_data", None) is not None:
        datamodule.test_data = datamodule.test_data + val
    elif mode == ValSplitMode.SYNTHETIC and isinstance(val, SyntheticAnomalyDataset):
        train = datamodule.train_data
        restored = copy.deepcopy(train)
        restored.samples = pd.concat([train.samples, val.source_samples], ignore_index=True)
        datamodule.train_data = restored


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)


def _synthesize(synthesizer: Synthesizer, image: torch.Tensor, seeds: list[int], source: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Run the synthesizer with each seed until it returns a non-empty mask; uint8 image [H,W,3] and mask [H,W]."""
    for seed in seeds:
        out, mask = synthesizer(image, seed=seed)
        out, mask = torch.as_tensor(out).detach().cpu(), torch.as_tensor(mask).detach().cpu()
        if out.shape != image.shape or mask.reshape(-1).numel() != image.shape[-2] * image.shape[-1]:
            raise ConfigError(
                f"Synthetic validation: {type(synthesizer).__name__} returned image {tuple(out.shape)} and mask "
                f"{tuple(mask.shape)} for the image {source} of shape {tuple(image.shape)}.",
                hint="A synthesizer must return an image of the input's shape and a mask [1, H, W].")
        binary = mask.reshape(image.shape[-2:]) > 0.5
        if bool(binary.any()):
            pixels = (out.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
            return np.ascontiguousarray(pixels), binary.numpy().astype(np.uint8) * 255
    raise DataError(
        f"Synthetic validation: {type(synthesizer).__name__} returned an empty mask for the image {source} "
        f"{len(seeds)} times (seeds {seeds}).",
        hint="Use a synthesizer that always perturbs the image (for plugin:perlin: probability=1.0).")


def apply_synthetic_validation(datamodule: Any, synthesizer: Synthesizer, *, ratio: float = 0.2, seed: int = 0,
                               anomalous_fraction: float = 0.5, output_dir: str | Path) -> dict[str, Any]:
    """Replace the datamodule's validation set by held-back training normals, part of them made anomalous.

    Call it after the datamodule is set up (:func:`uad_plugins.data.prepare_datamodule`). A seeded share
    ``ratio`` of ``train_data`` is held back (at least 2, leaving at least 1 for training); ``anomalous_fraction``
    of those are perturbed by ``synthesizer`` (seed ``seed + i`` for the i-th, retried with ``seed + i + k * n``
    when the mask is empty) and written as PNGs under ``output_dir/images`` and ``output_dir/masks``. What
    anomalib's own validation split took from the test or train set is given back first. The same seed gives the
    same files and rows. Returns a description of the split (also stored as ``datamodule.uad_validation``).
    """
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"Synthetic validation: ratio must be in (0, 1), got {ratio}.",
                          hint="It is the share of the normal training images held back for validation, e.g. 0.2.")
    if not 0.0 <= anomalous_fraction <= 1.0:
        raise ConfigError(f"Synthetic validation: anomalous_fraction must be in [0, 1], got {anomalous_fraction}.",
                          hint="It is the share of held-back images made anomalous, e.g. 0.5.")
    if getattr(datamodule, "train_data", None) is None:
        raise DataError("Synthetic validation: the datamodule has no training set.",
                        hint="Set it up first: uad_plugins.data.prepare_datamodule(datamodule).")
    _undo_anomalib_val_split(datamodule)
    train = datamodule.train_data
    samples = train.samples
    normal_rows = np.flatnonzero(samples["label_index"].to_numpy() == 0) if "label_index" in samples else \
        np.arange(len(samples))
    n_total = len(normal_rows)
    n_val = max(2, round(n_total * ratio))
    if n_total - n_val < 1:
        raise DataError(
            f"Synthetic validation: {n_total} normal training image(s) are too few to hold back {n_val} for "
            f"validation and keep at least 1 for training (ratio {ratio}).",
            hint="Add normal training images (at least 3), or supply a validation folder (val_split_mode=from_dir).")
    order = normal_rows[np.random.default_rng(seed).permutation(n_total)]
    held = order[:n_val]
    n_anomalous = round(n_val * anomalous_fraction)
    if 0.0 < anomalous_fraction < 1.0:
        n_anomalous = min(max(n_anomalous, 1), n_val - 1)  # keep both labels
    keep = sorted(set(range(len(samples))) - set(held.tolist()))

    output_dir = Path(output_dir)
    image_dir, mask_dir = output_dir / "images", output_dir / "masks"
    for folder in (image_dir, mask_dir):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.png"):  # files of an earlier run: the folders are ours
            stale.unlink()

    rows = samples.iloc[sorted(held.tolist())].copy()
    rows["split"] = "val"
    if "mask_path" not in rows.columns:
        rows["mask_path"] = ""
    anomalous = []
    for i, index in enumerate(held[:n_anomalous].tolist()):
        row = samples.iloc[index].copy()
        source = str(row["image_path"])
        image = _to_tensor(read_rgb_image(source))
        seeds = [seed + i + k * n_anomalous for k in range(MAX_TRIES)]
        pixels, mask = _synthesize(synthesizer, image, seeds, source)
        name = f"{i:03d}_{Path(source).stem}"
        image_path, mask_path = image_dir / f"{name}.png", mask_dir / f"{name}_mask.png"
        Image.fromarray(pixels).save(image_path)
        Image.fromarray(mask).save(mask_path)
        row["image_path"], row["mask_path"] = str(image_path), str(mask_path)
        row["label"], row["label_index"], row["split"] = "abnormal", 1, "val"
        anomalous.append(row)
    # the held-back images made anomalous leave the normal rows
    rows = rows[~rows["image_path"].isin([samples.iloc[j]["image_path"] for j in held[:n_anomalous].tolist()])]
    table = pd.concat([rows, pd.DataFrame(anomalous)], ignore_index=True) if anomalous else rows
    if "label_index" in samples:
        table["label_index"] = table["label_index"].astype(samples["label_index"].dtype)
    table = table.reset_index(drop=True)
    table.attrs = dict(samples.attrs)
    table.attrs["task"] = "segmentation"

    val = train.subsample(sorted(held.tolist()))  # a copy of the same dataset class
    val.samples = table
    val.samples.attrs["task"] = "segmentation"
    if hasattr(val, "split"):
        val.split = "val"
    val.augmentations = getattr(datamodule, "val_augmentations", None)
    datamodule.train_data = train.subsample(keep)
    datamodule.val_data = val
    if hasattr(datamodule, "_is_setup"):
        datamodule._is_setup = True  # the Trainer's setup() call must not redo the splits and drop this one
    description = {
        "mode": "synthetic",
        "synthesizer": type(synthesizer).__name__,
        "ratio": ratio,
        "seed": seed,
        "n_train": len(datamodule.train_data),
        "n_val_normal": n_val - n_anomalous,
        "n_val_anomalous": n_anomalous,
        "dir": str(output_dir),
    }
    datamodule.uad_validation = description
    return description
