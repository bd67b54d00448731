"""The torch-free edge runtime: load a bundle with openvino + numpy (+ pillow for image files) and score images or
signal windows (``manifest.modality``: ``image`` or ``signal``).

This module must never import torch, lightning, anomalib or anything of uad_plugins: only ``uad_edge`` (a test runs
it in a process where importing torch fails, and another reads every file of the package).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uad_edge.errors import EdgeError
from uad_edge.files import find_files, path_problem
from uad_edge.manifest import (
    MODALITIES,
    MODEL_BIN,
    MODEL_XML,
    SUPPORTED_FORMAT_VERSIONS,
    bundle_input,
    read_bundle,
    read_manifest,
)
from uad_edge.signals import check_signals, read_signal_file
from uad_edge.stream import EdgeResult, OnError, iter_predictions

__all__ = ["MODALITIES", "SUPPORTED_FORMAT_VERSIONS", "EdgeError", "EdgeModel", "EdgePrediction", "EdgeResult",
           "load_bundle", "read_manifest"]

#: graph outputs the runtime reads
REQUIRED_OUTPUTS = ("pred_score", "pred_label", "anomaly_map", "pred_mask")
#: image files that folders are searched for
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class EdgePrediction:
    """Outputs for N inputs: ``pred_score [N]`` (0.5 = threshold), ``pred_label [N]``, ``anomaly_map`` and
    ``pred_mask`` (images: ``[N, H, W]`` at the bundle's input size; signals: ``[N, K, Q]``), plus the sources.
    Bundles also give ``raw_score [N]`` and ``raw_map`` (before normalisation; the normalised score
    is clipped to [0, 1], the raw one ranks every window)."""

    pred_score: np.ndarray
    pred_label: np.ndarray
    anomaly_map: np.ndarray
    pred_mask: np.ndarray
    sources: list[str]
    raw_score: np.ndarray | None = None
    raw_map: np.ndarray | None = None
    modality: str = "image"

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per input."""
        if self.modality != "signal":
            rows = [{"image": src, "pred_score": float(s), "pred_label": bool(lbl)}
                    for src, s, lbl in zip(self.sources, self.pred_score, self.pred_label)]
            if self.raw_score is not None:  # bundles of format 2 on: ranks every image (pred_score is clipped)
                for row, raw in zip(rows, self.raw_score):
                    row["raw_score"] = float(raw)
            return rows
        rows = []
        for i, src in enumerate(self.sources):
            row: dict[str, Any] = {"signal": src, "pred_score": float(self.pred_score[i]),
                                   "pred_label": bool(self.pred_label[i])}
            if self.raw_score is not None:
                row["raw_score"] = float(self.raw_score[i])
            row["anomalous_points"] = int(np.count_nonzero(self.pred_mask[i]))
            rows.append(row)
        return rows


class EdgeModel:
    """A compiled bundle. ``predict`` takes, for an image bundle, image files, HxWx3 uint8 arrays, or float
    ``[N, 3, H, W]`` in [0, 1]; for a signal bundle, float windows ``[K, Q]`` / ``[B, K, Q]`` or ``.npy``/``.csv``
    files. ``input_size`` is ``(H, W)`` for images and ``(K, Q)`` (leads, samples) for signals."""

    def __init__(self, bundle: str | Path, *, device: str = "CPU", num_threads: int | None = None,
                 verify: bool = True, expected_manifest_sha256: str | None = None) -> None:
        import openvino as ov

        self.root = Path(bundle)
        # every check on the manifest (checksums, file paths, input bounds) comes before the model is read
        self.manifest, blobs = read_bundle(self.root, verify=verify, keep=(MODEL_XML, MODEL_BIN),
                                           expected_manifest_sha256=expected_manifest_sha256)
        self.modality, self.input_size, self.dynamic_batch = bundle_input(self.manifest, self.root)
        config: dict[str, Any] = {}
        hint = self.manifest.get("inference_precision_hint")
        if hint and device.upper().startswith("CPU"):
            config["INFERENCE_PRECISION_HINT"] = hint
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        try:
            core = ov.Core()
            if blobs:  # compile exactly the bytes that were verified, not whatever the files hold by now
                graph = core.read_model(blobs.pop(MODEL_XML), blobs.pop(MODEL_BIN))
            else:
                graph = core.read_model(self.root / MODEL_XML)
        except Exception as exc:
            raise EdgeError(f"bundle {self.root}: model.xml cannot be read: {str(exc).strip()[:400]}",
                            hint="Export the bundle again with a compatible uad_plugins/OpenVINO.") from exc
        self._check_graph(graph)
        self._core, self._graph, self._device, self._config = core, graph, device, config
        self._throughput: Any = None
        try:
            self.compiled = core.compile_model(graph, device, config)
        except Exception as exc:
            raise EdgeError(f"bundle {self.root} cannot be loaded on {device}: {str(exc).strip()[:400]}",
                            hint="Check the device name and that the bundle was exported by a compatible "
                            "uad_plugins/OpenVINO.") from exc
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]

    def _check_graph(self, graph: Any) -> None:
        """The graph must take the manifest's input (``[N, 3, H, W]`` or ``[N, K, Q]``, N dynamic or 1 as the
        manifest says) and give the outputs the runtime reads."""
        want = [3, *self.input_size] if self.modality == "image" else list(self.input_size)
        batch = "N" if self.dynamic_batch else "1"
        said = f"[{', '.join([batch, *map(str, want)])}]"
        fix = "The manifest does not belong to this model; export the bundle again."
        if len(graph.inputs) != 1:
            raise EdgeError(f"bundle {self.root}: model.xml has {len(graph.inputs)} inputs; a bundle model has one "
                            f"({said}).", hint=fix)
        shape = graph.inputs[0].get_partial_shape()
        dims = list(shape) if shape.rank.is_static else []
        agree = len(dims) == len(want) + 1 and all(d.is_static and d.get_length() == w for d, w in zip(dims[1:], want))
        if agree:
            agree = dims[0].is_dynamic if self.dynamic_batch else (dims[0].is_static and dims[0].get_length() == 1)
        if not agree:
            raise EdgeError(f"bundle {self.root}: manifest.json says the input is {said} but model.xml takes {shape}.",
                            hint=fix)
        names = {name for port in graph.outputs for name in port.get_names()}
        missing = [name for name in REQUIRED_OUTPUTS if name not in names]
        if missing:
            raise EdgeError(f"bundle {self.root}: model.xml has no output {', '.join(missing)}.", hint=fix)
        points = int(np.prod(self.input_size))
        for port in graph.outputs:
            if port.get_names() & {"anomaly_map", "pred_mask"} and port.get_partial_shape().is_static:
                size = int(np.prod(list(port.get_partial_shape().to_shape())[1:]))
                if size != points:
                    raise EdgeError(f"bundle {self.root}: model.xml's {port.get_any_name()} has "
                                    f"{port.get_partial_shape()} values per input, not the manifest's {said}.",
                                    hint=fix)

    @property
    def signal_shape(self) -> tuple[int, int]:
        """``(K, Q)``: leads and samples per window of a signal bundle."""
        if self.modality != "signal":
            raise EdgeError(f"bundle {self.root} is an {self.modality} bundle, not a signal one.")
        return self.input_size

    # ------------------------------------------------------------------ inputs
    def _signal_batch(self, signals: Any) -> tuple[np.ndarray, list[str]]:
        """Windows ``[B, K, Q]`` float32 from an array, a file, or a list of arrays and files."""
        if isinstance(signals, (str, Path)):
            signals = [signals]
        if isinstance(signals, (list, tuple)) and signals and \
                not any(isinstance(v, (str, Path, np.ndarray)) for v in signals):
            signals = np.asarray(signals)  # nested lists of numbers: one array
        if isinstance(signals, np.ndarray):
            batch = check_signals(signals, self.input_size, "input")
            return batch, [f"array[{i}]" for i in range(len(batch))]
        items = list(signals) if isinstance(signals, Iterable) else [signals]
        if not items:
            raise EdgeError("no signals given.")
        arrays, names = [], []
        for i, item in enumerate(items):
            if isinstance(item, (str, Path)):
                windows = read_signal_file(item, self.input_size)
                names += [str(item)] if len(windows) == 1 else [f"{item}#{row}" for row in range(len(windows))]
            else:
                windows = check_signals(item, self.input_size, f"input[{i}]")
                names += [f"array[{i}]"] if len(windows) == 1 else [f"array[{i}][{j}]" for j in range(len(windows))]
            arrays.append(windows)
        return np.concatenate(arrays), names

    def _load_image(self, source: str | Path, resize: bool) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = Path(source)
        try:
            with Image.open(path) as im:
                im.load()
                rgb = im.convert("RGB")
        except FileNotFoundError as exc:
            raise EdgeError(f"image not found: {path}") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise EdgeError(f"{path} cannot be read as an image ({type(exc).__name__}: {exc}).",
                            hint="Remove or replace the file.") from exc
        return self._fit_size(np.asarray(rgb), str(path), resize)

    def _fit_size(self, array: np.ndarray, name: str, resize: bool) -> np.ndarray:
        """HxWx3 uint8 -> 3xHxW float32 in [0, 1] at the bundle's input size."""
        height, width = self.input_size
        if array.shape[:2] != (height, width):
            if not resize:
                raise EdgeError(
                    f"{name} is {array.shape[1]}x{array.shape[0]} (WxH) but the bundle expects {width}x{height}.",
                    hint="Pass --resize (Python: resize=True) to resize it bilinearly, as in training.")
            from PIL import Image

            array = np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR))
        return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / 255.0

    def _as_batch(self, images: Any, resize: bool) -> tuple[np.ndarray, list[str]]:
        if isinstance(images, (str, Path)):
            images = [images]
        if isinstance(images, np.ndarray):
            return self._array_batch(images, resize)
        items = list(images) if isinstance(images, Iterable) else [images]
        if not items:
            raise EdgeError("no images given.")
        arrays, names = [], []
        for i, item in enumerate(items):
            if isinstance(item, (str, Path)):
                arrays.append(self._load_image(item, resize))
                names.append(str(item))
            else:
                batch, _ = self._array_batch(np.asarray(item), resize)
                arrays.extend(batch)
                names.append(f"array[{i}]")
        return np.stack(arrays), names

    def _array_batch(self, array: np.ndarray, resize: bool) -> tuple[np.ndarray, list[str]]:
        height, width = self.input_size
        if array.ndim == 3 and array.shape[-1] in (1, 3, 4) and array.dtype == np.uint8:
            array = array[None]
        if array.ndim == 4 and array.dtype == np.uint8:
            if array.shape[-1] != 3:
                raise EdgeError(f"images must have 3 channels (RGB), got {array.shape[-1]}.",
                                hint="Convert grey-scale or RGBA images to RGB first.")
            return np.stack([self._fit_size(a, f"array[{i}]", resize) for i, a in enumerate(array)]), \
                [f"array[{i}]" for i in range(len(array))]
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[1] != 3:
            raise EdgeError(f"expected float images [N, 3, {height}, {width}] in [0, 1] or uint8 [N, H, W, 3], "
                            f"got shape {tuple(array.shape)}.")
        if tuple(array.shape[-2:]) != (height, width):
            raise EdgeError(f"float input is {array.shape[-1]}x{array.shape[-2]} (WxH) but the bundle expects "
                            f"{width}x{height}.", hint="Resize upstream, or pass uint8 images with resize=True.")
        if not np.isfinite(array).all():
            raise EdgeError("the input contains NaN or infinite values.")
        return np.ascontiguousarray(array, dtype=np.float32), [f"array[{i}]" for i in range(len(array))]

    # ------------------------------------------------------------------ inference
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Graph outputs by name for a float batch ``[N, 3, H, W]`` or ``[N, K, Q]`` (a fixed-batch bundle is fed
        one by one)."""
        if not self.dynamic_batch and len(batch) > 1:
            parts = [self.infer(batch[i:i + 1]) for i in range(len(batch))]
            return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        # copied, never shared: a shared input stays bound to the caller's array after the call, and OpenVINO may
        # write into it from another request of this compiled model (tests/export/test_input_buffers.py)
        result = self.compiled(batch, share_inputs=False)
        return {port.get_any_name(): np.asarray(result[port]) for port in self.compiled.outputs}

    def throughput_model(self) -> Any:
        """The graph compiled again with the ``THROUGHPUT`` hint (several streams), once, for :meth:`predict_iter` and
        the server's request pool;
        ``predict`` keeps the latency-oriented model."""
        if self._throughput is None:
            try:
                self._throughput = self._core.compile_model(self._graph, self._device,
                                                            {**self._config, "PERFORMANCE_HINT": "THROUGHPUT"})
            except Exception as exc:
                raise EdgeError(f"bundle {self.root} cannot be compiled for throughput on {self._device}: "
                                f"{str(exc).strip()[:400]}", hint="Use predict, or another --device.") from exc
        return self._throughput

    def predict_iter(self, images: Iterable[Any], *, batch_size: int = 8, resize: bool = False,
                     requests: int | None = None, workers: int | None = None, maps: bool = True,
                     on_error: OnError = "raise") -> Iterator[EdgeResult]:
        """Score any number of images (files or ``HxWx3`` uint8 arrays, read lazily), yielding one
        :class:`EdgeResult` per input in input order with at most ``requests + 2`` chunks of ``batch_size`` inputs
        in memory; ``requests`` infer requests run at once (throughput hint). A bad input raises its
        :class:`EdgeError` at its turn, or, with ``on_error="record"``, is yielded with ``error`` set.
        ``maps=False`` drops the per-pixel maps (scores only)."""
        return iter_predictions(self, images, batch_size=batch_size, resize=resize, requests=requests,
                                workers=workers, maps=maps, on_error=on_error)

    def predict(self, images: Any, *, resize: bool = False, batch_size: int = 8) -> EdgePrediction:
        """Score images or signal windows (paths, arrays, or a batch); see the class docstring for accepted inputs.

        A signal bundle checks every window first: a float array of the bundle's ``(K, Q)``, finite values; a wrong
        dtype, rank, lead count or length is an :class:`EdgeError` that says what was expected.
        """
        if batch_size < 1:
            raise EdgeError(f"batch_size must be at least 1, got {batch_size}.")
        if self.modality == "signal":
            if resize:
                raise EdgeError("resize is for image bundles; a signal bundle takes windows of exactly "
                                f"{self.input_size[1]} samples.", hint="Cut the signal into windows upstream.")
            batch, names = self._signal_batch(images)
        else:
            batch, names = self._as_batch(images, resize)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(batch), batch_size):
            for key, value in self.infer(batch[start:start + batch_size]).items():
                parts.setdefault(key, []).append(value)
        out = {k: np.concatenate(v) for k, v in parts.items()}
        amap = out["anomaly_map"].reshape(len(batch), *self.input_size)
        raw_score, raw_map = out.get("raw_score"), out.get("raw_map")
        return EdgePrediction(pred_score=out["pred_score"].reshape(-1), pred_label=out["pred_label"].reshape(-1),
                              anomaly_map=amap, pred_mask=out["pred_mask"].reshape(amap.shape), sources=names,
                              raw_score=None if raw_score is None else raw_score.reshape(-1),
                              raw_map=None if raw_map is None else raw_map.reshape(amap.shape),
                              modality=self.modality)


def load_bundle(bundle: str | Path, *, device: str = "CPU", num_threads: int | None = None,
                expected_manifest_sha256: str | None = None) -> EdgeModel:
    """Load and compile a bundle written by ``uad export``, verified (see :func:`read_manifest`);
    ``expected_manifest_sha256`` pins it to the manifest checksum recorded at export."""
    return EdgeModel(bundle, device=device, num_threads=num_threads, expected_manifest_sha256=expected_manifest_sha256)


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named by ``inputs`` (files, or folders searched recursively, hidden names skipped); a missing
    input, a symbolic-link loop or a broken link with an image extension is an :class:`EdgeError` naming it."""
    suffixes = set(IMAGE_SUFFIXES)
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(find_files(path, suffixes))
        elif path.is_file():
            files.append(path)
        else:
            raise EdgeError(f"input {path} {path_problem(path) or 'cannot be read'}.",
                            hint="Give image files or folders of images.")
    return files
