"""Optimiser recipes shared by model plugins."""

from __future__ import annotations

from typing import Any

from torch import optim

__all__ = ["adamw_with_one_decay"]


def adamw_with_one_decay(module: Any, parameters: Any, lr: float, weight_decay: float, decay_at: float) -> Any:
    """AdamW plus **one** x0.1 learning-rate step at ``decay_at`` of ``trainer.max_epochs`` (stepped per epoch).

    UniAD (and OneNIP after it) trains 1000 epochs with ``StepLR(800, 0.1)``: a single decay at 80 % of training.
    Mapping that milestone to a fraction keeps the shape for any ``max_epochs``; it is a one-time milestone
    (``MultiStepLR``), because ``StepLR`` with the mapped step would decay again at every multiple of it when
    ``decay_at <= 0.5``. Without a known positive ``max_epochs``, or with ``decay_at <= 0``, there is no decay.
    """
    optimizer = optim.AdamW(parameters, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    trainer = getattr(module, "_trainer", None)
    max_epochs = getattr(trainer, "max_epochs", None) if trainer is not None else None
    if not max_epochs or max_epochs < 1 or decay_at <= 0:
        return optimizer
    milestone = max(1, round(decay_at * max_epochs))
    scheduler = optim.lr_scheduler.MultiStepLR(optimizer, milestones=[milestone], gamma=0.1)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
