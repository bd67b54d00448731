"""``SignalDataset``: signal windows with labels, optional point masks and provenance.

The windows are held in memory (``signals [N, K, Q]``) or read on demand by a ``loader(i)`` (large datasets such as
PTB-XL). ``record`` names the group each window belongs to (a record or a file): splits and honest validation are
made per record, never per window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from uad_plugins.data.signals.batch import SignalBatch, SignalItem

__all__ = ["SignalDataset"]


class SignalDataset(Dataset):
    """Signal windows for training, validation, testing or prediction.

    Args:
        signals: ``[N, K, Q]`` float32 windows, or ``None`` when ``loader`` reads them.
        labels: ``[N]`` 0 (normal) / 1 (anomalous).
        records: ``N`` record or file ids (the unit of splits).
        paths: ``N`` source paths (default: the record ids).
        starts: ``[N]`` first sample of each window in its record (default 0).
        masks: optional ``[N, K, Q]`` point masks (1 = anomalous point).
        loader: ``loader(key) -> [K, Q]`` for windows read on demand.
        keys: the loader key of each window (default ``0..N-1``).
        shape: ``(K, Q)``; required with ``loader``.
        split: ``train``, ``val``, ``test`` or ``predict`` (for messages).
    """

    def __init__(self, signals: np.ndarray | None, labels: Sequence[int] | np.ndarray, records: Sequence[str],
                 paths: Sequence[str] | None = None, starts: Sequence[int] | np.ndarray | None = None,
                 masks: np.ndarray | None = None, loader: Callable[[int], np.ndarray] | None = None,
                 shape: tuple[int, int] | None = None, split: str = "train",
                 keys: Sequence[int] | np.ndarray | None = None) -> None:
        if signals is None and loader is None:
            raise ValueError("SignalDataset needs signals or a loader.")
        self.signals = None if signals is None else np.ascontiguousarray(signals, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.records = [str(r) for r in records]
        self.paths = [str(p) for p in (paths if paths is not None else self.records)]
        self.starts = np.zeros(len(self.labels), np.int64) if starts is None else np.asarray(starts, np.int64)
        self.masks = None if masks is None else np.ascontiguousarray(masks, dtype=np.uint8)
        self.loader = loader
        self.keys = np.arange(len(self.labels)) if keys is None else np.asarray(keys, np.int64)
        self.split = split
        if self.signals is not None:
            self._shape = (int(self.signals.shape[1]), int(self.signals.shape[2]))
        elif shape is not None:
            self._shape = (int(shape[0]), int(shape[1]))
        else:
            raise ValueError("SignalDataset with a loader needs shape=(K, Q).")
        n = len(self.labels)
        lengths = {"records": len(self.records), "paths": len(self.paths), "starts": len(self.starts),
                   "keys": len(self.keys)}
        if self.signals is not None:
            lengths["signals"] = len(self.signals)
        if self.masks is not None:
            lengths["masks"] = len(self.masks)
        if any(v != n for v in lengths.values()):
            raise ValueError(f"SignalDataset: {n} labels but {lengths}.")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int]:
        """``(K, Q)``: leads and window length."""
        return self._shape

    @property
    def has_anomalous(self) -> bool:
        return bool((self.labels == 1).any())

    @property
    def has_normal(self) -> bool:
        return bool((self.labels == 0).any())

    def signal_at(self, index: int) -> np.ndarray:
        """Window ``index`` as ``[K, Q]`` float32."""
        if self.signals is not None:
            return self.signals[index]
        assert self.loader is not None
        return np.asarray(self.loader(int(self.keys[index])), dtype=np.float32)

    def __getitem__(self, index: int) -> SignalItem:
        signal = torch.from_numpy(np.array(self.signal_at(index), dtype=np.float32, copy=True))
        mask = None if self.masks is None else torch.from_numpy(self.masks[index].astype(bool))
        return SignalItem(signal=signal, gt_label=torch.tensor(bool(self.labels[index])), gt_mask=mask,
                          signal_path=self.paths[index], record=self.records[index],
                          start=torch.tensor(int(self.starts[index])))

    @staticmethod
    def collate_fn(items: Sequence[SignalItem]) -> SignalBatch:
        """Collate items into a :class:`SignalBatch`."""
        return SignalBatch.collate(items)

    @property
    def samples(self) -> Any:
        """A pandas table of the windows (record, path, start, label), for inspection."""
        import pandas as pd

        return pd.DataFrame({"record": self.records, "signal_path": self.paths, "start": self.starts,
                             "label_index": self.labels, "split": self.split})

    # ------------------------------------------------------------------ subsets
    def subset(self, indices: Sequence[int] | np.ndarray, split: str | None = None) -> SignalDataset:
        """The windows at ``indices`` (a new dataset; in-memory windows are copied)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return SignalDataset(
            None if self.signals is None else self.signals[idx], self.labels[idx], [self.records[i] for i in idx],
            [self.paths[i] for i in idx], self.starts[idx], None if self.masks is None else self.masks[idx],
            loader=self.loader, shape=self.shape, split=split or self.split, keys=self.keys[idx])

    def materialize(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The windows at ``indices`` (all by default) as one ``[n, K, Q]`` array."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.signals is not None:
            return self.signals[idx]
        if len(idx) == 0:
            return np.zeros((0, *self.shape), np.float32)
        return np.stack([self.signal_at(int(i)) for i in idx]).astype(np.float32)

    @classmethod
    def concat(cls, parts: Sequence[SignalDataset], split: str | None = None) -> SignalDataset:
        """Concatenate in-memory datasets (the result holds every window in memory)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("SignalDataset.concat needs at least one non-empty dataset.")
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"cannot concatenate signal datasets of shapes {sorted(shapes)}.")
        masks = None
        if any(p.masks is not None for p in parts):
            masks = np.concatenate([p.masks if p.masks is not None else np.zeros((len(p), *p.shape), np.uint8)
                                    for p in parts])
        return cls(np.concatenate([p.materialize() for p in parts]), np.concatenate([p.labels for p in parts]),
                   [r for p in parts for r in p.records], [q for p in parts for q in p.paths],
                   np.concatenate([p.starts for p in parts]), masks, split=split or parts[0].split)
