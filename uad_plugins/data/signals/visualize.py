"""``SignalVisualizer``: one PNG per window with the signal (ground-truth anomalies shaded) and its anomaly-score
curve, written during ``test`` and ``predict`` (matplotlib, Agg canvas; no global backend is touched)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from anomalib.visualization import Visualizer

__all__ = ["SignalVisualizer", "plot_signal"]


def plot_signal(signal: np.ndarray, score_map: np.ndarray, path: str | Path, *, gt_mask: np.ndarray | None = None,
                title: str = "", threshold: float | None = None, max_leads: int = 12) -> Path:
    """Write ``signal [K, Q]`` (up to ``max_leads`` leads, stacked) above the per-time anomaly score (the map
    ``[K, Q]`` averaged over leads, with the per-lead maximum as a band) to a PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    signal = np.asarray(signal, dtype=np.float32)
    score_map = np.asarray(score_map, dtype=np.float32)
    leads = min(signal.shape[0], max_leads)
    t = np.arange(signal.shape[-1])
    fig = Figure(figsize=(10, 1.1 * leads + 2.2), dpi=80)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(leads + 2, 1, hspace=0.15)
    for k in range(leads):
        ax = fig.add_subplot(grid[k, 0])
        ax.plot(t, signal[k], color="black", linewidth=0.8)
        if gt_mask is not None and gt_mask[k].any():
            low, high = float(signal[k].min()), float(signal[k].max())
            ax.fill_between(t, low, high, where=gt_mask[k] > 0, color="tab:red", alpha=0.2, linewidth=0)
        ax.set_ylabel(f"lead {k}", fontsize=7)
        ax.tick_params(labelsize=6, labelbottom=False)
        ax.set_xlim(0, len(t) - 1)
    ax = fig.add_subplot(grid[leads:, 0])
    mean = score_map.mean(axis=0)
    ax.fill_between(t, score_map.min(axis=0), score_map.max(axis=0), color="tab:orange", alpha=0.25, linewidth=0)
    ax.plot(t, mean, color="tab:red", linewidth=1.0, label="anomaly score (mean over leads)")
    if threshold is not None and np.isfinite(threshold):
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=0.8, label="threshold")
    ax.set_xlim(0, len(t) - 1)
    ax.set_xlabel("sample", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "signal"


class SignalVisualizer(Visualizer):
    """Writes ``<run>/images/<label>/<record>_<start>.png`` for test and predict windows.

    Args:
        max_plots: at most this many PNGs per run and label (0 = none; ``None`` = every window). Test sets of beat
            windows hold thousands of windows, so the default keeps the first 50 normal and 50 anomalous ones.
        output_dir: folder for the PNGs (default: ``<trainer.default_root_dir>/images``).
        max_leads: leads drawn per window.
    """

    def __init__(self, max_plots: int | None = 50, output_dir: str | Path | None = None, max_leads: int = 12) -> None:
        super().__init__()
        self.max_plots = max_plots
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.max_leads = max_leads
        self._counts: dict[str, int] = {}

    def _reset(self) -> None:
        self._counts = {}

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset()

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._reset()

    def _write(self, trainer: Any, pl_module: Any, batch: Any) -> None:
        if getattr(batch, "anomaly_map", None) is None or getattr(batch, "signal", None) is None:
            return
        root = self.output_dir or Path(trainer.default_root_dir) / "images"
        threshold = None
        post = getattr(pl_module, "post_processor", None)
        if post is not None:  # the threshold in the units of the map: normalised once post-processing has run
            normalised = getattr(batch, "pred_label", None) is not None and getattr(post, "enable_normalization", False)
            threshold = float(post.normalized_pixel_threshold if normalised else post.pixel_threshold)
        signals = batch.signal.detach().cpu().numpy()
        maps = batch.anomaly_map.detach().float().cpu().numpy()
        masks = None if batch.gt_mask is None else batch.gt_mask.detach().cpu().numpy()
        for i in range(len(signals)):
            label = "unlabelled" if batch.gt_label is None else ("anomalous" if bool(batch.gt_label[i]) else "normal")
            count = self._counts.get(label, 0)
            if self.max_plots is not None and count >= self.max_plots:
                continue
            self._counts[label] = count + 1
            record = batch.record[i] if batch.record else f"window{count}"
            start = int(batch.start[i]) if batch.start is not None else count
            score = float(batch.pred_score[i]) if batch.pred_score is not None else float("nan")
            title = f"{record} @ {start}  raw score {score:.3f}  ({label})"
            plot_signal(signals[i], maps[i], root / label / f"{_safe(str(record))}_{start}.png",
                        gt_mask=None if masks is None else masks[i], title=title, threshold=threshold,
                        max_leads=self.max_leads)

    def on_test_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._write(trainer, pl_module, outputs if outputs is not None else batch)

    def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        self._write(trainer, pl_module, outputs if outputs is not None else batch)
