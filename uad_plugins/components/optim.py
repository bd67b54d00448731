"""Optimiser recipes shared by model plugins."""

from __future__ import annotations

import math
from typing import Any

from torch import optim

__all__ = ["adamw_with_one_decay"]


def _total_steps(trainer: Any) -> int | None:
    """The fit's optimiser steps as Lightning estimates them (epochs and ``max_steps``, whichever ends first), or
    ``None`` when unknown or unbounded."""
    try:
        total = getattr(trainer, "estimated_stepping_batches", None)
    except Exception:  # noqa: BLE001 - Lightning raises when it cannot estimate (no train dataloader yet)
        return None
    if total is None or not math.isfinite(float(total)) or int(total) < 1:
        return None
    return int(total)


def adamw_with_one_decay(module: Any, parameters: Any, lr: float, weight_decay: float, decay_at: float) -> Any:
    """AdamW plus **one** x0.1 learning-rate step at ``decay_at`` of training.

    UniAD (and OneNIP after it) trains 1000 epochs with ``StepLR(800, 0.1)``: a single decay at 80 % of training.
    Mapping that milestone to a fraction keeps the shape for any schedule; it is a one-time milestone
    (``MultiStepLR``), because ``StepLR`` with the mapped step would decay again at every multiple of it when
    ``decay_at <= 0.5``. The fraction is of the fit's optimiser steps when Lightning can estimate them (a schedule
    in epochs, in ``max_steps``, or both: the milestone is stepped per optimiser step), else of ``max_epochs``
    (stepped per epoch). With neither known, or with ``decay_at <= 0``, there is no decay.
    """
    optimizer = optim.AdamW(parameters, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    trainer = getattr(module, "_trainer", None)
    if trainer is None or decay_at <= 0:
        return optimizer
    total, interval = _total_steps(trainer), "step"
    if total is None:
        total, interval = getattr(trainer, "max_epochs", None), "epoch"
    if not total or total < 1:
        return optimizer
    milestone = max(1, round(decay_at * total))
    scheduler = optim.lr_scheduler.MultiStepLR(optimizer, milestones=[milestone], gamma=0.1)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
