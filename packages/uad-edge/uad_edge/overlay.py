"""Heatmap overlays with numpy + pillow only (no matplotlib on edge boxes)."""

from __future__ import annotations

import numpy as np

__all__ = ["colorize", "overlay"]


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to a blue-cyan-yellow-red palette (jet-like); returns HxWx3 uint8."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray | None = None,
            alpha: float = 0.45) -> np.ndarray:
    """Blend a normalised anomaly map over an HxWx3 uint8 image; outline the predicted mask in white."""
    heat = colorize(anomaly_map).astype(np.float32)
    out = (1 - alpha) * image.astype(np.float32) + alpha * heat
    if mask is not None and mask.any():
        m = mask.astype(bool)
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        out[edge] = 255.0
    return np.clip(out, 0, 255).astype(np.uint8)
