"""Stop training when the validation normals' scores stop changing.

A fixed number of epochs means a different amount of training on every dataset. :class:`StopWhenStable` watches
what the honest validation set says instead: after each validation pass it compares the raw scores of the
validation **normals** (never test data) with those of the previous pass, and stops the fit once they have moved
less than ``tolerance`` of their own spread for ``patience`` passes in a row.

The change between two passes is ``median_i |s_i - s'_i| / MAD(s')``: the typical movement of one normal's score,
in units of the median absolute deviation of the previous scores. It does not depend on the score's scale, so one
tolerance serves models whose scores are distances, probabilities or reconstruction errors.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from uad_plugins.errors import ConfigError

__all__ = ["DEFAULT_PATIENCE", "StopWhenStable", "check_stability_tolerance", "score_change"]

logger = logging.getLogger("uad_plugins")

#: validation passes in a row whose change must stay under the tolerance
DEFAULT_PATIENCE = 2
_TINY = 1e-12


def check_stability_tolerance(tolerance: float | None) -> None:
    """``None`` (off) or a number in (0, 1); a clear ConfigError otherwise."""
    if tolerance is None:
        return
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < float(tolerance) < 1:
        raise ConfigError(f"--stop_when_stable must be a tolerance in (0, 1), got {tolerance!r}.",
                          hint="0.05 stops once the validation normals' scores move less than 5 % of their "
                               "spread between two validation passes; leave it unset to train the full schedule.")


def score_change(previous: torch.Tensor, current: torch.Tensor) -> float:
    """``median |current - previous| / MAD(previous)``: how far the scores moved, in units of their spread."""
    previous, current = previous.double().flatten(), current.double().flatten()
    spread = (previous - previous.median()).abs().median()
    return float((current - previous).abs().median() / spread.clamp_min(_TINY))


class StopWhenStable(Callback):
    """Stop the fit once the validation normals' raw scores change less than ``tolerance`` (see the module).

    Args:
        tolerance: the largest change (in MADs of the previous scores) that counts as stable.
        patience: stable passes in a row needed to stop.
        min_steps: never stop before this many optimiser steps.

    ``history`` keeps one ``{"epoch", "step", "change"}`` per validation pass; ``stopped_at`` the step it stopped at
    (``None`` when the schedule ran out first). Only normal samples (``gt_label == 0``) of the validation set are read;
    their order must be the same in every pass (the validation loader is never shuffled).
    """

    def __init__(self, tolerance: float = 0.05, patience: int = DEFAULT_PATIENCE, min_steps: int = 0) -> None:
        check_stability_tolerance(tolerance)
        if patience < 1:
            raise ConfigError(f"stop when stable: patience must be at least 1, got {patience}.",
                              hint="Use 1 or more validation passes.")
        self.tolerance = float(tolerance)
        self.patience = int(patience)
        self.min_steps = int(min_steps)
        self.history: list[dict[str, Any]] = []
        self.stopped_at: int | None = None
        self._previous: torch.Tensor | None = None
        self._current: list[torch.Tensor] = []
        self._stable_passes = 0

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        del trainer, pl_module
        self._current = []

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        del pl_module, batch_idx, dataloader_idx
        if trainer.sanity_checking:
            return
        source = outputs if outputs is not None and getattr(outputs, "pred_score", None) is not None else batch
        scores, labels = getattr(source, "pred_score", None), getattr(batch, "gt_label", None)
        if scores is None or labels is None:
            return
        scores = torch.as_tensor(scores).detach().flatten().float().cpu()
        normal = torch.as_tensor(labels).detach().flatten().cpu() == 0
        self._current.append(scores[normal].clone())

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        del pl_module
        if trainer.sanity_checking:
            return
        change = self._change(trainer)
        step = int(trainer.global_step)
        stable = change is not None and self._stable_passes >= self.patience and step >= self.min_steps
        # several processes (DDP) each see a share of the validation set: stop only when every one is stable, and
        # every process takes part in this decision at every pass (a process that skipped it would hang the others)
        if getattr(trainer, "world_size", 1) > 1:
            stable = bool(trainer.strategy.reduce_boolean_decision(stable, all=True))
        if stable:
            logger.info("Stopping at step %d (epoch %d): the validation normals' scores moved %.3g of their spread "
                        "(tolerance %.3g, %d passes in a row).", step, trainer.current_epoch, change or 0.0,
                        self.tolerance, self.patience)
            self.stopped_at = step
            trainer.should_stop = True

    def _change(self, trainer: Any) -> float | None:
        """This pass's change against the previous one (recorded in ``history``), ``None`` when there is none."""
        if not self._current:
            return None
        current = torch.cat(self._current)
        previous, self._previous = self._previous, current
        if previous is None or previous.numel() != current.numel() or current.numel() < 2:
            return None
        change = score_change(previous, current)
        self.history.append({"epoch": int(trainer.current_epoch), "step": int(trainer.global_step),
                             "change": round(change, 6)})
        self._stable_passes = self._stable_passes + 1 if change < self.tolerance else 0
        return change

    def record(self) -> dict[str, Any]:
        """What the run's metrics record: the rule, each pass's change and where training stopped."""
        return {"tolerance": self.tolerance, "patience": self.patience, "stopped_at_step": self.stopped_at,
                "passes": list(self.history)}
