"""Honest validation for signals: held-back training normals (whole records) plus synthetic anomalies.

Thresholds and score normalisation are fitted on this set, never on the test set. Normals are held back **by
record** (or by file for generic arrays): a validation record contributes no window to training. Part of the held
back windows are perturbed by a signal synthesizer (``plugin:ecg_anomaly`` by default), which also gives point
masks. The set is written to ``output_dir/validation_signals.npz`` so that it can be inspected and reproduced.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from uad_edge.atomic import atomic_path
from uad_plugins.data.signals.dataset import SignalDataset
from uad_plugins.data.signals.io import normalize_windows
from uad_plugins.errors import ConfigError, DataError
from uad_plugins.protocols import modality_of

if TYPE_CHECKING:
    from uad_plugins.synth.base import Synthesizer

__all__ = ["MAX_TRIES", "synthesize_checked", "synthetic_signal_validation"]

logger = logging.getLogger(__name__)

#: seeds tried per window before a synthesizer that keeps returning empty masks is given up on
MAX_TRIES = 5


def synthesize_checked(synthesizer: Synthesizer, signal: torch.Tensor, seeds: list[int], source: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Run a signal synthesizer with each seed until its mask is non-empty; return ``(signal, mask)`` arrays."""
    if modality_of(synthesizer) != "signal":
        raise ConfigError(f"{type(synthesizer).__name__} makes {modality_of(synthesizer)} anomalies, not signal ones.",
                          hint="Use a signal synthesizer, e.g. plugin:ecg_anomaly.")
    for seed in seeds:
        out, mask = synthesizer(signal, seed=seed)
        out = torch.as_tensor(out).detach().cpu().float()
        mask = torch.as_tensor(mask).detach().cpu()
        if tuple(out.shape) != tuple(signal.shape) or mask.numel() != signal.numel():
            raise ConfigError(f"{type(synthesizer).__name__} returned a signal {tuple(out.shape)} and a mask "
                              f"{tuple(mask.shape)} for the window {source} of shape {tuple(signal.shape)}.",
                              hint="A signal synthesizer returns a signal and a mask of the input's shape [K, Q].")
        if not bool(torch.isfinite(out).all()):
            raise ConfigError(f"{type(synthesizer).__name__} returned NaN/inf values for the window {source}.")
        binary = mask.reshape(signal.shape) > 0.5
        if bool(binary.any()):
            return out.numpy(), binary.numpy().astype(np.uint8)
    raise DataError(f"{type(synthesizer).__name__} returned an empty mask for the window {source} {len(seeds)} "
                    f"times (seeds {seeds}).", hint="Use a synthesizer that always perturbs the signal.")


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def synthetic_signal_validation(train: SignalDataset, synthesizer: Synthesizer, *, ratio: float = 0.2,
                                seed: int = 0, anomalous_fraction: float = 0.5, max_windows: int | None = 1000,
                                output_dir: str | Path | None = None, renormalize: str = "none"
                                ) -> tuple[SignalDataset, SignalDataset, dict[str, Any]]:
    """Split ``train`` into (training, validation) and make part of the validation windows anomalous.

    A seeded share ``ratio`` of the training **records** is held back (at least one, leaving at least one); with a
    single training record, windows are held back instead (the description says ``"by": "windows"``). At most
    ``max_windows`` held-back windows are used for validation (a seeded subset; ``None``: all). A share
    ``anomalous_fraction`` of them is perturbed by ``synthesizer`` (seed ``seed + i``, retried with other seeds
    while the mask is empty). ``renormalize`` is the per-window scaling the datamodule gave its windows (``minmax``
    or ``zscore``; ``none``/``record`` change nothing): each perturbed window is scaled again with it, so a synthetic
    anomaly passes through the same scaling as a real one (unscaled, an injected beat could stand outside the range a
    real anomalous window is squashed into, and validation would be easier than the test). Returns the new training
    set, the validation set and a description.
    """
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"Synthetic validation: ratio must be in (0, 1), got {ratio}.",
                          hint="It is the share of the training records held back for validation, e.g. 0.2.")
    if not 0.0 <= anomalous_fraction <= 1.0:
        raise ConfigError(f"Synthetic validation: anomalous_fraction must be in [0, 1], got {anomalous_fraction}.")
    rng = np.random.default_rng(seed)
    normal = np.flatnonzero(train.labels == 0)
    groups = sorted({train.records[i] for i in normal})
    if len(normal) < 3:
        raise DataError(f"Synthetic validation: {len(normal)} normal training window(s) are too few to hold back "
                        "validation windows and keep training ones.", hint="Add normal training data.")
    if len(groups) >= 2:
        n_held = min(max(1, round(len(groups) * ratio)), len(groups) - 1)
        held_groups = set(np.asarray(groups)[rng.permutation(len(groups))[:n_held]].tolist())
        held = np.asarray([i for i in normal if train.records[i] in held_groups], dtype=np.int64)
        by = "records"
    else:
        logger.warning("Synthetic validation: only one training record (%s); holding back windows of it instead of "
                       "whole records.", groups[0])
        n_val = min(max(2, round(len(normal) * ratio)), len(normal) - 1)
        held = np.sort(normal[rng.permutation(len(normal))[:n_val]])
        held_groups = set()
        by = "windows"
    keep = np.setdiff1d(np.arange(len(train)), held if by == "windows" else
                        np.asarray([i for i in range(len(train)) if train.records[i] in held_groups], np.int64))
    if len(keep) < 1:
        raise DataError("Synthetic validation: no training window would be left.", hint="Add normal training data.")
    chosen = held if max_windows is None or len(held) <= max_windows else \
        np.sort(held[rng.permutation(len(held))[:max_windows]])
    n_val = len(chosen)
    if n_val < 2:
        raise DataError(f"Synthetic validation: the held-back record(s) give {n_val} window(s); at least 2 are needed.",
                        hint="Add training records or lower the window length.")
    n_anomalous = round(n_val * anomalous_fraction)
    if 0.0 < anomalous_fraction < 1.0:
        n_anomalous = min(max(n_anomalous, 1), n_val - 1)
    order = chosen[rng.permutation(n_val)]
    anomalous_idx, normal_idx = order[:n_anomalous], np.sort(order[n_anomalous:])

    signals = train.materialize(normal_idx)
    masks = np.zeros_like(signals, dtype=np.uint8)
    labels = np.zeros(len(normal_idx), np.int64)
    records = [train.records[i] for i in normal_idx]
    paths = [train.paths[i] for i in normal_idx]
    starts = train.starts[normal_idx]
    synthetic, synthetic_masks = [], []
    for k, index in enumerate(anomalous_idx.tolist()):
        window = torch.from_numpy(train.materialize([index])[0])
        seeds = [seed + k + t * max(n_anomalous, 1) for t in range(MAX_TRIES)]
        out, mask = synthesize_checked(synthesizer, window, seeds, f"{train.paths[index]}@{train.starts[index]}")
        synthetic.append(out.astype(np.float32))
        synthetic_masks.append(mask)
    if synthetic:
        signals = np.concatenate([signals, normalize_windows(np.stack(synthetic), renormalize)])
        masks = np.concatenate([masks, np.stack(synthetic_masks)])
        labels = np.concatenate([labels, np.ones(len(synthetic), np.int64)])
        records += [train.records[i] for i in anomalous_idx]
        paths += [f"{train.paths[i]}#synthetic" for i in anomalous_idx]
        starts = np.concatenate([starts, train.starts[anomalous_idx]])
    val = SignalDataset(signals, labels, records, paths, starts, masks, split="val")
    new_train = train.subset(keep, split="train")
    description: dict[str, Any] = {
        "mode": "synthetic", "by": by, "synthesizer": type(synthesizer).__name__, "ratio": ratio, "seed": seed,
        "renormalize": renormalize,
        "n_train": len(new_train), "n_val_normal": int((labels == 0).sum()),
        "n_val_anomalous": int((labels == 1).sum()),
        "validation_records": sorted(held_groups) if by == "records" else groups,
    }
    if output_dir is not None:
        path = Path(output_dir) / "validation_signals.npz"
        _save_npz_atomic(path, signals=signals, masks=masks, labels=labels, records=np.asarray(records),
                         starts=np.asarray(starts))
        description["file"] = str(path)
    return new_train, val, description
