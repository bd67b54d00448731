"""Signal inputs for the edge runtime, with numpy only: checking arrays against a bundle, reading ``.npy``/``.csv``
files, and drawing a window with its anomaly-score curve (pillow).

File layouts follow ``SignalFolder`` (docs/signals.md): a ``.npy`` holds ``[Q]`` or ``[K, Q]`` (one window), ``[N, Q]``
(one lead, one window per row) or ``[N, K, Q]``; a ``.csv`` row is one window, a multi-lead row holds the K leads one
after the other; a non-numeric first line is a header. A window must already have the bundle's length (the
datamodule's windowing, filtering and normalisation are recorded in ``manifest.preprocessing.data``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uad_edge.errors import EdgeError
from uad_edge.files import ErrorFactory, find_files, path_problem, read_npy

__all__ = ["SIGNAL_SUFFIXES", "check_signals", "list_signal_files", "read_signal_csv", "read_signal_file",
           "signal_plot"]

SIGNAL_SUFFIXES = (".npy", ".csv")
def check_signals(array: object, shape: tuple[int, int], name: str = "input") -> np.ndarray:
    """``[K, Q]`` or ``[B, K, Q]`` float values -> ``[B, K, Q]`` float32; a clear :class:`EdgeError` for a wrong
    type, dtype, rank, lead count, length, or NaN/inf values."""
    leads, length = shape
    want = f"[{leads}, {length}] (leads x samples) or a batch [B, {leads}, {length}]"
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except (TypeError, ValueError) as exc:
            raise EdgeError(f"{name} cannot be read as an array ({exc}); expected {want}.") from exc
    if not (np.issubdtype(array.dtype, np.floating)):
        raise EdgeError(f"{name} holds {array.dtype} values; the bundle takes float32 signals {want}.",
                        hint="Convert with .astype(np.float32) after scaling the signal like the training windows "
                        "(raw ADC counts are not; see the bundle's manifest.preprocessing.data).")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise EdgeError(f"{name} has shape {tuple(array.shape)}; expected {want}.")
    if array.shape[0] == 0:
        raise EdgeError(f"{name} holds no windows (shape {tuple(array.shape)}).")
    if array.shape[1] != leads:
        raise EdgeError(f"{name} has {array.shape[1]} lead(s), but the bundle expects {leads} "
                        f"(shape {tuple(array.shape)}, expected {want}).",
                        hint="Give the leads the model was trained on, in the same order (manifest "
                        "preprocessing.data.channels/leads).")
    if array.shape[2] != length:
        raise EdgeError(f"{name} has windows of {array.shape[2]} samples, but the bundle expects {length}.",
                        hint=f"Cut the signal into windows of {length} samples prepared like the training windows "
                        "(manifest preprocessing.data).")
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise EdgeError(f"{name} has {int(bad.sum())} NaN or infinite value(s) (first at index {first}).",
                        hint="Repair or interpolate the missing samples, or leave the window out.")
    return np.ascontiguousarray(array, dtype=np.float32)


def list_signal_files(inputs: Sequence[str | Path]) -> list[Path]:
    """``.npy``/``.csv`` files named by ``inputs`` (files, or folders searched recursively, hidden ones skipped);
    a missing input, a symbolic-link loop or a broken link is an :class:`EdgeError` naming it."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(find_files(path, SIGNAL_SUFFIXES))
        elif path.is_file():
            if path.suffix.lower() not in SIGNAL_SUFFIXES:
                raise EdgeError(f"{path} has an unknown extension {path.suffix!r}; a signal bundle reads "
                                f"{' and '.join(SIGNAL_SUFFIXES)} files.")
            files.append(path)
        else:
            raise EdgeError(f"input {path} {path_problem(path) or 'cannot be read'}.",
                            hint="Give .npy/.csv files or folders holding them.")
    return files


def read_signal_csv(path: str | Path, *, unit: str = "window", error: ErrorFactory = EdgeError) -> np.ndarray:
    """The rows of a signal CSV as ``[N, L]`` float64: one ``unit`` (``window``, ``sample``: for the messages) per
    row, blank cells skipped, a non-numeric first line taken for a header. Every problem is ``error(message,
    hint=...)`` naming the file (:class:`EdgeError` here, ``DataError`` in the core readers)."""
    path = Path(path)
    rows: list[list[float]] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for n, row in enumerate(csv.reader(fh)):
                cells = [c.strip() for c in row if c.strip() != ""]
                if not cells:
                    continue
                try:
                    rows.append([float(c) for c in cells])
                except ValueError:
                    if n == 0:  # a header line
                        continue
                    raise error(f"{path}, line {n + 1}: non-numeric value(s) {cells[:3]}.",
                                hint=f"A signal CSV holds one {unit} per row, numbers only (an optional header "
                                "line is skipped).") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not a text CSV file ({exc}).") from exc
    except OSError as exc:
        raise error(f"{path} {path_problem(path) or f'cannot be read ({exc.strerror or exc})'}.") from exc
    if not rows:
        raise error(f"{path} holds no {unit}s.", hint=f"Write one {unit} per row.")
    lengths = sorted({len(r) for r in rows})
    if len(lengths) != 1:
        raise error(f"{path}: rows have different lengths {lengths[:5]}.",
                    hint=f"Every row is one {unit} of the same length (leads one after the other).")
    return np.asarray(rows, dtype=np.float64)


def read_signal_file(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """The windows of one ``.npy``/``.csv`` file as ``[N, K, Q]`` float32, checked against ``shape = (K, Q)``."""
    path = Path(path)
    leads, length = shape
    suffix = path.suffix.lower()
    if suffix in SIGNAL_SUFFIXES and (problem := path_problem(path)) is not None:
        raise EdgeError(f"{path} {problem}.", hint="Give .npy/.csv files or folders holding them.")
    if suffix == ".npy":
        # any numbers pass here; check_signals refuses all but floats (the documented input: raw integer ADC counts
        # are not scaled like the training windows)
        array = read_npy(path, kinds="biufc", what="numbers")
        if array.ndim == 1:
            array = array[None, None]
        elif array.ndim == 2:
            if leads == 1:
                array = array[:, None]  # [N, Q]: one window per row
            elif array.shape[0] == leads:
                array = array[None]  # [K, Q]: one window
            else:
                raise EdgeError(f"{path} holds an array of shape {tuple(array.shape)}, but the bundle expects "
                                f"{leads} leads: [{leads}, {length}] or [N, {leads}, {length}].",
                                hint="Give the leads the model was trained on.")
        elif array.ndim != 3:
            raise EdgeError(f"{path} holds a {array.ndim}-D array; expected [Q], [K, Q], [N, Q] or [N, K, Q].")
    elif suffix == ".csv":
        rows = read_signal_csv(path)
        if rows.shape[1] % leads:
            raise EdgeError(f"{path}: a row holds {rows.shape[1]} values, not a multiple of the bundle's {leads} "
                            "lead(s).", hint="A multi-lead row holds the K leads one after the other.")
        array = rows.reshape(rows.shape[0], leads, rows.shape[1] // leads)
    else:
        raise EdgeError(f"{path} has an unknown extension {path.suffix!r}; expected .npy or .csv.")
    return check_signals(array, shape, name=str(path))


# ---------------------------------------------------------------------------------------------------- drawing
_INK, _GRID, _LEAD = (40, 40, 40), (225, 225, 225), (31, 90, 160)
_SHADE, _CURVE, _BAND, _THRESHOLD = (255, 214, 214), (200, 40, 40), (246, 190, 150), (120, 120, 120)


def _polyline(values: np.ndarray, box: tuple[int, int, int, int], low: float, high: float) -> list[tuple[float, float]]:
    left, top, right, bottom = box
    span = high - low if high > low else 1.0
    xs = np.linspace(left, right, len(values))
    ys = bottom - (np.clip(values, low, high) - low) / span * (bottom - top)
    return list(zip(xs.tolist(), ys.tolist()))


def signal_plot(signal: np.ndarray, anomaly_map: np.ndarray, pred_mask: np.ndarray | None = None, *,
                title: str = "", width: int = 900, lead_height: int = 90, curve_height: int = 130) -> np.ndarray:
    """One window ``[K, Q]`` (leads stacked) above its anomaly-score curve (normalised map: mean over leads, band =
    min-max over leads, threshold 0.5), predicted anomalous points shaded; an ``H x W x 3`` uint8 image."""
    from PIL import Image, ImageDraw

    signal = np.asarray(signal, dtype=np.float64)
    amap = np.clip(np.asarray(anomaly_map, dtype=np.float64), 0.0, 1.0)
    leads, length = signal.shape
    margin, head = 10, 22
    height = head + leads * lead_height + curve_height + 2 * margin
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right = margin + 40, width - margin
    mask = np.zeros((leads, length), bool) if pred_mask is None else np.asarray(pred_mask, bool).reshape(leads, length)
    xs = np.linspace(left, right, length)
    step = (right - left) / max(length - 1, 1)

    def shade(flags: np.ndarray, top: float, bottom: float) -> None:
        for i in np.flatnonzero(flags):  # predicted anomalous points
            draw.rectangle([max(xs[i] - step / 2, left), top, min(xs[i] + step / 2, right), bottom], fill=_SHADE)

    draw.text((margin, 4), title, fill=_INK)
    for k in range(leads):
        top = head + k * lead_height
        box = (left, top + 4, right, top + lead_height - 4)
        shade(mask[k], top + 2, top + lead_height - 2)
        draw.rectangle([left, top + 2, right, top + lead_height - 2], outline=_GRID)
        low, high = float(signal[k].min()), float(signal[k].max())
        pad = 0.05 * (high - low) if high > low else 1.0
        draw.line(_polyline(signal[k], box, low - pad, high + pad), fill=_LEAD, width=1)
        draw.text((margin, top + 4), f"L{k}", fill=_INK)
    top = head + leads * lead_height + margin
    box = (left, top, right, top + curve_height - margin)
    shade(mask.any(axis=0), top, box[3])
    draw.rectangle([left, top, right, box[3]], outline=_GRID)
    upper = _polyline(amap.max(axis=0), box, 0.0, 1.0)
    lower = _polyline(amap.min(axis=0), box, 0.0, 1.0)
    if leads > 1:
        draw.polygon(upper + lower[::-1], fill=_BAND)
    threshold_y = _polyline(np.array([0.5]), box, 0.0, 1.0)[0][1]
    for x in range(left, right, 8):  # dashed threshold line
        draw.line([(x, threshold_y), (min(x + 4, right), threshold_y)], fill=_THRESHOLD)
    draw.line(_polyline(amap.mean(axis=0), box, 0.0, 1.0), fill=_CURVE, width=2)
    draw.text((margin, top + 2), "score", fill=_INK)
    draw.text((margin, threshold_y - 6), "0.5", fill=_THRESHOLD)
    return np.asarray(image)
