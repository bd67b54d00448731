"""A pool of OpenVINO infer requests over one compiled model: each call borrows its own request, so concurrent
callers (the server's worker threads) never share one. Imports openvino-free code only (the compiled model comes
from :class:`~uad_edge.runtime.EdgeModel`)."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np

__all__ = ["InferPool"]


class InferPool:
    """``size`` infer requests of the model compiled with the ``THROUGHPUT`` hint (several CPU streams, so
    concurrent requests run side by side; default size: that compilation's optimal number); :meth:`run` blocks
    while all are busy."""

    def __init__(self, model: Any, size: int | None = None) -> None:
        self.model = model
        compiled = model.throughput_model()
        if size is None:
            try:
                size = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            except Exception:  # noqa: BLE001 - a device without the property: one request per core is plenty
                size = 1
        self.size = max(1, int(size))
        self._free: queue.Queue[Any] = queue.Queue()
        for _ in range(self.size):
            self._free.put(compiled.create_infer_request())
        self.output_names = [port.get_any_name() for port in compiled.outputs]

    def _one(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        request = self._free.get()
        try:
            request.infer({0: batch})
            return {name: np.array(request.get_output_tensor(i).data, copy=True)
                    for i, name in enumerate(self.output_names)}
        finally:
            self._free.put(request)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Graph outputs by name for ``batch`` (``[N, ...]`` float32); a fixed-batch model is fed one by one."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.model.dynamic_batch or len(batch) == 1:
            return self._one(batch)
        parts = [self._one(batch[i:i + 1]) for i in range(len(batch))]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
