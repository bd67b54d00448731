"""Progress as plain log lines, for runs whose output goes to a file or a pipe instead of a terminal.

Lightning's progress bars redraw one line with carriage returns: in a log file they show nothing until the line
ends, which for a slow model is once an epoch. :class:`LogProgress` logs one line at most every ``interval_s``
seconds and one at the end of every epoch: stage, epoch, batch, seconds per batch, time left in the epoch, and the
loss where the model logs one.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

from lightning.pytorch import Callback

__all__ = ["LogProgress", "output_is_a_terminal"]

logger = logging.getLogger("uad_plugins")


def output_is_a_terminal() -> bool:
    """True where progress bars can redraw (stderr is an interactive terminal)."""
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _total(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        value = sum(v for v in value if isinstance(v, (int, float)) and math.isfinite(v))
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return int(value)
    return None


class LogProgress(Callback):
    """Log training, validation and test progress as lines (see the module docstring)."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = float(interval_s)
        self._started: dict[str, float] = {}  # per stage: validation runs inside a training epoch
        self._last = 0.0

    # ------------------------------------------------------------------ helpers
    def _start(self, stage: str) -> None:
        self._started[stage] = self._last = time.perf_counter()

    def _line(self, stage: str, trainer: Any, batch: int, total: int | None, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        elapsed = now - self._started.get(stage, now)
        per_batch = elapsed / max(batch, 1)
        where = f"batch {batch}/{total}" if total else f"batch {batch}"
        left = f", {_clock(per_batch * (total - batch))} left" if total and batch < total else ""
        epoch = ""
        if stage == "fit":
            max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
            epoch = f"epoch {trainer.current_epoch + 1}" + (f"/{max_epochs}" if max_epochs else "") + ", "
        loss = ""
        value = trainer.callback_metrics.get("loss_step", trainer.callback_metrics.get("loss"))
        if value is not None:
            try:
                loss = f", loss {float(value):.4g}"
            except (TypeError, ValueError):
                loss = ""
        logger.info("%s: %s%s, %.2f s/batch%s%s", stage, epoch, where, per_batch, left, loss)

    # ------------------------------------------------------------------ fit
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start("fit")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._line("fit", trainer, batch_idx + 1, _total(trainer.num_training_batches))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.completed)
        self._line("fit", trainer, done, _total(trainer.num_training_batches), force=True)

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start("validation")

    def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._line("validation", trainer, batch_idx + 1, _total(trainer.num_val_batches))

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start("test")

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._line("test", trainer, batch_idx + 1, _total(trainer.num_test_batches))

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start("predict")

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self._line("predict", trainer, batch_idx + 1, _total(trainer.num_predict_batches))
