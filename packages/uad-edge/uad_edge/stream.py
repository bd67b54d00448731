"""Streaming inference: any number of images, a bounded number of them in memory (``EdgeModel.predict_iter``).

Inputs are decoded a chunk (``batch_size`` inputs) at a time by a small thread pool, one chunk ahead of inference.
Each chunk goes to one of ``requests`` OpenVINO infer requests (``start_async``) on a copy of the model compiled
with the ``THROUGHPUT`` performance hint, so every core is busy; when a request's turn comes its outputs are copied
out (``wait`` releases the GIL) and the request is reused; results are yielded in input order. At most
``requests + 2`` chunks are decoded and not yet yielded, so memory does not grow with the number of inputs.

No Python callback runs on OpenVINO's threads (``AsyncInferQueue`` with a callback did: a callback still finishing
after its request was waited for needs the GIL, and the compiled model's destructor, which holds it, waits for that
thread, so a process could hang at exit).

A file that cannot be scored (missing, truncated, not an image, the wrong size without ``resize``) raises its
:class:`EdgeError` when its turn comes (``on_error="raise"``), or is yielded as a result with ``error`` set
(``on_error="record"``, what ``uad infer --format jsonl|csv`` uses). Standard library, numpy and openvino only.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from uad_edge.errors import EdgeError

__all__ = ["EdgeResult", "iter_predictions"]

OnError = Literal["raise", "record"]


@dataclass
class EdgeResult:
    """The result for one input: scores, or ``error`` (one line) when it could not be scored. ``anomaly_map`` and
    ``pred_mask`` are ``[H, W]`` at the bundle's input size (``None`` with ``maps=False`` or on error)."""

    source: str
    pred_score: float | None = None
    pred_label: bool | None = None
    raw_score: float | None = None
    anomaly_map: np.ndarray | None = None
    pred_mask: np.ndarray | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self) -> dict[str, Any]:
        """A JSON-ready dict: the keys of ``EdgePrediction.records()`` (``image``, ``pred_score``, ``pred_label``,
        ``raw_score``), and ``error`` for an input that failed."""
        if self.error is not None:
            return {"image": self.source, "pred_score": None, "pred_label": None, "error": self.error}
        row: dict[str, Any] = {"image": self.source, "pred_score": self.pred_score, "pred_label": self.pred_label}
        if self.raw_score is not None:
            row["raw_score"] = self.raw_score
        return row


class _Request:
    """One started inference: its inputs (positions in the chunk), the OpenVINO request running it and, once
    finished, its outputs (or its failure)."""

    def __init__(self, positions: list[int], infer: Any, slots: _Slots) -> None:
        self.positions = positions
        self.infer: Any = infer
        self.slots = slots
        self.outputs: dict[str, np.ndarray] | None = None
        self.failure: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.infer is None

    def finish(self) -> None:
        """Wait for the inference (GIL released), copy its outputs out and give the OpenVINO request back."""
        if self.infer is None:
            return
        try:
            self.infer.wait()
            self.outputs = {name: np.array(self.infer.get_output_tensor(i).data, copy=True)
                            for i, name in enumerate(self.slots.names)}
        except Exception as exc:  # noqa: BLE001 - reported with the chunk's inputs
            self.failure = exc
        finally:
            self.slots.idle.append(self.infer)
            self.infer = None

    def poll(self) -> bool:
        """Finish the request if its inference is over; whether it is done."""
        if self.infer is not None and self.infer.wait_for(0):
            self.finish()
        return self.done


class _Slots:
    """``depth`` OpenVINO infer requests, reused in the order they were started."""

    def __init__(self, compiled: Any, depth: int) -> None:
        if depth < 1:
            depth = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.names = [port.get_any_name() for port in compiled.outputs]
        self.idle: deque[Any] = deque(compiled.create_infer_request() for _ in range(max(1, depth)))
        self.depth = len(self.idle)
        self.running: deque[_Request] = deque()

    def start(self, positions: list[int], batch: np.ndarray) -> _Request:
        while not self.idle:  # every request busy: the oldest one finishes first
            self.running.popleft().finish()
        request = _Request(positions, self.idle.popleft(), self)
        request.infer.start_async({0: batch})
        self.running.append(request)
        return request

    def drain(self) -> None:
        """Wait for every inference still running (an early stop), so none outlives the compiled model."""
        while self.running:
            self.running.popleft().finish()


class _Chunk:
    """Up to ``batch_size`` inputs: their names, decode errors, and the requests that score the others."""

    def __init__(self, names: list[str], decoded: list[Future[np.ndarray]]) -> None:
        self.names = names
        self.decoded = decoded
        self.requests: list[_Request] = []

    def ready(self) -> bool:
        return all(request.poll() for request in self.requests)


def _source_name(index: int, item: Any) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"array[{index}]"


def _decode(model: Any, item: Any, name: str, resize: bool) -> np.ndarray:
    """One input as float32 ``[3, H, W]`` in [0, 1]: an image file or an ``HxWx3`` uint8 array."""
    if isinstance(item, (str, Path)):
        try:
            return model._load_image(item, resize)
        except EdgeError:
            raise
        except Exception as exc:  # a decoder's own error (e.g. a decompression bomb): this file only
            raise EdgeError(f"{item} cannot be read as an image ({type(exc).__name__}: {exc}).",
                            hint="Remove or replace the file.") from exc
    array = np.asarray(item)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise EdgeError(f"{name}: predict_iter takes image files or uint8 HxWx3 arrays, got {array.dtype} "
                        f"{tuple(array.shape)}.", hint="Use predict for float batches.")
    return model._fit_size(array, name, resize)


def _submit(slots: _Slots, chunk: _Chunk, dynamic_batch: bool) -> None:
    """Send the chunk's decoded inputs: one request (dynamic batch) or one per input (a batch-1 bundle)."""
    good = [i for i, future in enumerate(chunk.decoded) if future.exception() is None]
    groups = [good] if dynamic_batch else [[i] for i in good]
    for positions in groups:
        if not positions:
            continue
        batch = np.stack([chunk.decoded[i].result() for i in positions])
        chunk.requests.append(slots.start(positions, batch))


def _results(chunk: _Chunk, input_size: tuple[int, int], maps: bool, on_error: OnError) -> Iterator[EdgeResult]:
    """The chunk's results in input order (waits for its requests)."""
    by_position: dict[int, tuple[dict[str, np.ndarray], int]] = {}
    for request in chunk.requests:
        request.finish()
        if request.failure is not None:
            raise EdgeError(f"inference failed on {chunk.names[request.positions[0]]} and the "
                            f"{len(request.positions) - 1} input(s) after it: {request.failure}") from request.failure
        assert request.outputs is not None
        for row, position in enumerate(request.positions):
            by_position[position] = (request.outputs, row)
    for position, name in enumerate(chunk.names):
        failure = chunk.decoded[position].exception()
        if failure is not None:
            if on_error == "raise":
                raise failure
            message = failure.message if isinstance(failure, EdgeError) else str(failure)
            yield EdgeResult(source=name, error=" ".join(message.split()))
            continue
        out, row = by_position[position]
        raw = out.get("raw_score")
        result = EdgeResult(source=name, pred_score=float(out["pred_score"].reshape(-1)[row]),
                            pred_label=bool(out["pred_label"].reshape(-1)[row]),
                            raw_score=None if raw is None else float(raw.reshape(-1)[row]))
        if maps:
            height, width = input_size
            result.anomaly_map = out["anomaly_map"].reshape(-1, height, width)[row].copy()
            result.pred_mask = out["pred_mask"].reshape(-1, height, width)[row].copy()
        yield result


def iter_predictions(model: Any, sources: Iterable[Any], *, batch_size: int = 8, resize: bool = False,
                     requests: int | None = None, workers: int | None = None, maps: bool = True,
                     on_error: OnError = "raise") -> Iterator[EdgeResult]:
    """Score ``sources`` (image files or ``HxWx3`` uint8 arrays, any iterable, read lazily) with ``model``'s
    throughput copy; see the module docstring. ``requests``: infer requests in flight (default: OpenVINO's optimal
    number); ``workers``: decode threads (default 4)."""
    if batch_size < 1:
        raise EdgeError(f"batch_size must be at least 1, got {batch_size}.")
    if on_error not in ("raise", "record"):
        raise EdgeError(f"on_error must be 'raise' or 'record', got {on_error!r}.")
    if model.modality != "image":
        raise EdgeError(f"predict_iter scores image bundles; {model.root} is a {model.modality} bundle.",
                        hint="Use predict for signal windows.")
    slots = _Slots(model.throughput_model(), int(requests or 0))
    depth = slots.depth
    items = enumerate(sources)
    pool = ThreadPoolExecutor(max_workers=workers or 4, thread_name_prefix="uad-decode")

    def decode_next() -> _Chunk | None:
        batch = list(itertools.islice(items, batch_size))
        if not batch:
            return None
        labels = [_source_name(i, item) for i, item in batch]
        return _Chunk(labels, [pool.submit(_decode, model, item, label, resize)
                               for (_, item), label in zip(batch, labels)])

    window: deque[_Chunk] = deque()
    try:
        upcoming = decode_next()
        while upcoming is not None:
            chunk, upcoming = upcoming, decode_next()  # the next chunk decodes while this one is scored
            for future in chunk.decoded:
                future.exception()  # wait for the decode
            _submit(slots, chunk, model.dynamic_batch)
            window.append(chunk)
            while window and (len(window) > depth or window[0].ready()):
                yield from _results(window.popleft(), model.input_size, maps, on_error)
        while window:
            yield from _results(window.popleft(), model.input_size, maps, on_error)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        slots.drain()  # an early stop (Ctrl-C, an error, a consumer that stopped reading)
