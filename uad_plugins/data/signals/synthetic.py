"""Procedural ECG-like signals for tests and examples: a beat (P, QRS, T waves as Gaussians) per window, and
anomalous windows with a widened, inverted QRS and a point mask where the beat differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["make_synthetic_signal_folder", "synthetic_ecg_windows"]

#: (relative centre, relative width, amplitude) of the P, Q, R, S and T waves in a window
_WAVES = ((0.25, 0.030, 0.15), (0.37, 0.008, -0.12), (0.40, 0.010, 1.00), (0.43, 0.008, -0.25),
          (0.65, 0.050, 0.30))


def synthetic_ecg_windows(n: int, n_leads: int = 1, length: int = 128, *, anomalous: bool = False, seed: int = 0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` windows ``[n, K, Q]`` float32 with one beat each (leads differ in gain), and their point masks.

    Normal windows jitter the beat position, amplitude and noise slightly. Anomalous windows replace the QRS by a
    wide inverted complex (a PVC-like beat); the mask marks the points that differ from the normal beat by more
    than 5 % of the R amplitude.
    """
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, length, dtype=np.float64)
    signals = np.zeros((n, n_leads, length), np.float32)
    masks = np.zeros((n, n_leads, length), np.uint8)
    gains = np.linspace(1.0, 0.5, n_leads)
    for i in range(n):
        shift = rng.normal(0.0, 0.01)
        scale = rng.normal(1.0, 0.05)
        beat = np.zeros(length)
        for centre, width, amplitude in _WAVES:
            beat += amplitude * np.exp(-0.5 * ((t - centre - shift) / width) ** 2)
        beat *= scale
        clean = beat
        if anomalous:
            qrs = np.exp(-0.5 * ((t - 0.40 - shift) / 0.035) ** 2)
            normal_qrs = sum(a * np.exp(-0.5 * ((t - c - shift) / w) ** 2) for c, w, a in _WAVES[1:4]) * scale
            clean = beat - normal_qrs - 0.9 * scale * qrs
        for k in range(n_leads):
            noise = rng.normal(0.0, 0.01, length)
            signals[i, k] = (gains[k] * clean + noise).astype(np.float32)
            if anomalous:
                masks[i, k] = (np.abs(clean - beat) * gains[k] > 0.05).astype(np.uint8)
    return signals, masks


def make_synthetic_signal_folder(root: str | Path, *, n_leads: int = 1, length: int = 128, n_train: int = 4,
                                 per_file: int = 8, n_test_normal: int = 8, n_test_anomalous: int = 8, seed: int = 0
                                 ) -> Path:
    """Write a :class:`~uad_plugins.data.signals.SignalFolder` layout under ``root``:

    ``train/good/normal_<i>.npy`` (``n_train`` files of ``[per_file, K, Q]``), ``test/good/normal.npy``,
    ``test/bad/pvc.npy`` and ``ground_truth/bad/pvc.npy`` (point masks). Returns ``root``.
    """
    root = Path(root)
    for folder in ("train/good", "test/good", "test/bad", "ground_truth/bad"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        windows, _ = synthetic_ecg_windows(per_file, n_leads, length, seed=seed + i)
        np.save(root / "train" / "good" / f"normal_{i}.npy", windows)
    windows, _ = synthetic_ecg_windows(n_test_normal, n_leads, length, seed=seed + 1000)
    np.save(root / "test" / "good" / "normal.npy", windows)
    windows, masks = synthetic_ecg_windows(n_test_anomalous, n_leads, length, anomalous=True, seed=seed + 2000)
    np.save(root / "test" / "bad" / "pvc.npy", windows)
    np.save(root / "ground_truth" / "bad" / "pvc.npy", masks)
    return root
