"""Signal batch types, following anomalib's dataclass conventions.

A signal sample is a float tensor ``[K, Q]`` (``K`` leads, ``Q`` time points). Items and batches carry the same
field names anomalib's image batches use for labels and predictions (``gt_label``, ``gt_mask``, ``pred_score``,
``pred_label``, ``anomaly_map``, ``pred_mask``), so anomalib's ``PostProcessor``, ``Evaluator`` and metrics work on
them unchanged; only the input field differs (``signal`` instead of ``image``). Masks and maps are point-level:
``[K, Q]`` per item, ``[B, K, Q]`` per batch.

Provenance fields say where a window came from: ``signal_path`` (the record or file), ``record`` (the record or file
id used for record-wise splits) and ``start`` (the first sample of the window in that record).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from anomalib.data.dataclasses.generic import UpdateMixin

__all__ = ["SignalBatch", "SignalItem"]

_TENSOR_FIELDS = ("gt_label", "gt_mask", "start", "pred_score", "pred_label", "anomaly_map", "pred_mask")


def _check_signal(value: Any, ndim: int, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what}.signal must be a torch.Tensor, got {type(value).__name__}.")
    if value.ndim != ndim:
        shape = "[K, Q]" if ndim == 2 else "[B, K, Q]"
        raise ValueError(f"{what}.signal must have shape {shape}, got {tuple(value.shape)}.")
    return value if value.is_floating_point() else value.float()


@dataclass
class SignalItem(UpdateMixin):
    """One signal window: ``signal [K, Q]`` plus labels, provenance and (after prediction) outputs."""

    signal: torch.Tensor
    gt_label: torch.Tensor | None = None
    gt_mask: torch.Tensor | None = None
    signal_path: str | None = None
    record: str | None = None
    start: torch.Tensor | None = None
    pred_score: torch.Tensor | None = None
    pred_label: torch.Tensor | None = None
    anomaly_map: torch.Tensor | None = None
    pred_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.signal = _check_signal(self.signal, 2, "SignalItem")
        if self.gt_mask is not None and tuple(self.gt_mask.shape) != tuple(self.signal.shape):
            raise ValueError(f"SignalItem.gt_mask has shape {tuple(self.gt_mask.shape)}, the signal "
                             f"{tuple(self.signal.shape)}.")


@dataclass
class SignalBatch(UpdateMixin):
    """A batch of signal windows: ``signal [B, K, Q]``, ``gt_label [B]``, ``gt_mask [B, K, Q]`` (optional) and the
    model outputs ``pred_score [B]``, ``anomaly_map [B, K, Q]`` (plus ``pred_label``/``pred_mask`` after
    post-processing).
    """

    signal: torch.Tensor
    gt_label: torch.Tensor | None = None
    gt_mask: torch.Tensor | None = None
    signal_path: list[str] | None = None
    record: list[str] | None = None
    start: torch.Tensor | None = None
    pred_score: torch.Tensor | None = None
    pred_label: torch.Tensor | None = None
    anomaly_map: torch.Tensor | None = None
    pred_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.signal = _check_signal(self.signal, 3, "SignalBatch")
        if self.gt_mask is not None and tuple(self.gt_mask.shape) != tuple(self.signal.shape):
            raise ValueError(f"SignalBatch.gt_mask has shape {tuple(self.gt_mask.shape)}, the signal "
                             f"{tuple(self.signal.shape)}.")

    @property
    def batch_size(self) -> int:
        """Number of windows in the batch."""
        return int(self.signal.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    @property
    def items(self) -> list[SignalItem]:
        """The batch as a list of :class:`SignalItem`."""
        out = []
        for i in range(self.batch_size):
            values: dict[str, Any] = {}
            for f in fields(self):
                value = getattr(self, f.name)
                values[f.name] = None if value is None else value[i]
            out.append(SignalItem(**values))
        return out

    def __iter__(self) -> Iterator[SignalItem]:
        yield from self.items

    @classmethod
    def collate(cls, items: Sequence[SignalItem]) -> SignalBatch:
        """Stack items into a batch (every item must have the same ``[K, Q]``)."""
        if not items:
            raise ValueError("SignalBatch.collate needs at least one item.")
        shapes = {tuple(item.signal.shape) for item in items}
        if len(shapes) != 1:
            raise ValueError(f"cannot batch signals of different shapes {sorted(shapes)}.")
        values: dict[str, Any] = {"signal": torch.stack([item.signal for item in items])}
        for name in _TENSOR_FIELDS:
            column = [getattr(item, name) for item in items]
            if all(v is not None for v in column):
                values[name] = torch.stack([torch.as_tensor(v) for v in column])
        for name in ("signal_path", "record"):
            column = [getattr(item, name) for item in items]
            if all(v is not None for v in column):
                values[name] = [str(v) for v in column]
        return cls(**values)

    def prediction_rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per window: where it came from, its score and label (for predictions.json/csv)."""
        rows = []
        for i in range(self.batch_size):
            rows.append({
                "signal_path": self.signal_path[i] if self.signal_path else None,
                "record": self.record[i] if self.record else None,
                "start": int(self.start[i]) if self.start is not None else None,
                "pred_score": float(self.pred_score[i]) if self.pred_score is not None else None,
                "pred_label": bool(self.pred_label[i]) if self.pred_label is not None else None,
            })
        return rows
