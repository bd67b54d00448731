"""The KServe v2 / Open Inference Protocol's JSON side: model metadata, and checked reading of an infer request
into a float32 batch; the answer's ``outputs`` in the graph's names, shapes and datatypes (as OpenVINO Model Server
answers for the same ``model.xml``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from uad_edge.serving.errors import RequestError

__all__ = ["InferRequest", "datatype_of", "model_metadata", "output_tensors", "parse_infer_request"]

#: OpenVINO element type names -> KServe v2 datatypes
DATATYPES = {"f32": "FP32", "f16": "FP16", "f64": "FP64", "boolean": "BOOL", "u8": "UINT8", "i8": "INT8",
             "i32": "INT32", "i64": "INT64", "u32": "UINT32", "u64": "UINT64", "bf16": "BF16"}


def datatype_of(port: Any) -> str:
    """The KServe datatype of an OpenVINO port."""
    return DATATYPES.get(port.get_element_type().get_type_name(), "FP32")


def _dims(port: Any) -> list[int]:
    """A port's shape with ``-1`` for each dynamic dimension."""
    shape = port.get_partial_shape()
    return [d.get_length() if d.is_static else -1 for d in shape]


def model_metadata(model: Any, name: str, version: str) -> dict[str, Any]:
    """``GET /v2/models/{name}``: name, versions, platform, inputs and outputs (name, datatype, shape), and the
    bundle's thresholds under ``parameters`` (pred_score/pred_label are normalised: 0.5 is the threshold)."""
    compiled = model.compiled
    manifest = model.manifest
    post = manifest.get("postprocessing") or {}
    return {
        "name": name, "versions": [version], "platform": "openvino_ir",
        "inputs": [{"name": port.get_any_name(), "datatype": datatype_of(port), "shape": _dims(port)}
                   for port in compiled.inputs],
        "outputs": [{"name": port.get_any_name(), "datatype": datatype_of(port), "shape": _dims(port)}
                    for port in compiled.outputs],
        "parameters": {"modality": model.modality, "precision": manifest.get("precision"),
                       "component": (manifest.get("component") or {}).get("reference"),
                       "score_threshold": 0.5, "input_range": [0, 1], "input_layout": (manifest.get("input") or {})
                       .get("layout", "NCHW"),
                       "raw_thresholds": {k: post[k] for k in ("image_threshold", "pixel_threshold") if k in post}},
    }


@dataclass(frozen=True)
class InferRequest:
    """A checked infer request: the batch, the request id (echoed back), and the outputs asked for (None: all)."""

    batch: np.ndarray
    id: str | None
    outputs: list[str] | None


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, f"the request body is not JSON ({type(exc).__name__}: {str(exc)[:200]}).") from exc
    if not isinstance(value, dict):
        raise RequestError(400, f"the request body is a JSON {type(value).__name__}, not an object with 'inputs'.")
    return value


def _tensor(entry: Any, input_name: str, want: list[int], max_batch: int) -> np.ndarray:
    """One ``inputs`` entry to a float32 array of its declared shape, every field checked."""
    if not isinstance(entry, dict):
        raise RequestError(400, "each 'inputs' entry must be an object {name, shape, datatype, data}.")
    if entry.get("name") != input_name:
        raise RequestError(400, f"unknown input {entry.get('name')!r}; this model takes one input named "
                                f"{input_name!r}.")
    if entry.get("datatype") != "FP32":
        raise RequestError(400, f"input datatype {entry.get('datatype')!r} is not supported; send FP32.")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(400, f"input 'shape' must be a list of integers, got {shape!r}.")
    said = "[N, " + ", ".join(map(str, want[1:])) + "]"
    if len(shape) != len(want) or shape[1:] != want[1:] or not 1 <= shape[0] <= max_batch:
        raise RequestError(400, f"input shape {shape} does not match this model's {said} with 1 <= N <= "
                                f"{max_batch}.")
    data = entry.get("data")
    if not isinstance(data, list):
        raise RequestError(400, "input 'data' must be a JSON array of numbers (flat, row-major, or nested).")
    try:
        array = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise RequestError(400, f"input 'data' is not a regular array ({exc}).") from exc
    if array.dtype.kind not in "fiu":
        raise RequestError(400, f"input 'data' must hold numbers only, not {array.dtype.kind!r} values.")
    if array.size != math.prod(shape):
        raise RequestError(400, f"input 'data' holds {array.size} values; shape {shape} needs {math.prod(shape)}.")
    array = array.astype(np.float32).reshape(shape)
    if not np.isfinite(array).all():
        raise RequestError(400, "input 'data' contains NaN or infinite values.")
    return array


def parse_infer_request(body: bytes, model: Any, *, max_batch: int) -> InferRequest:
    """Read ``POST /v2/models/{name}/infer``'s JSON body into a checked :class:`InferRequest`."""
    request = _object(body)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise RequestError(400, "the request must hold 'inputs': a list of exactly one tensor.")
    port = model.compiled.inputs[0]
    batch = _tensor(inputs[0], port.get_any_name(), _dims(port), max_batch)
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, "'id' must be a string.")
    wanted = request.get("outputs")
    names: list[str] | None = None
    if wanted is not None:
        known = [p.get_any_name() for p in model.compiled.outputs]
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise RequestError(400, "'outputs' must be a list of objects {name}.")
        names = [o.get("name") for o in wanted]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RequestError(400, f"unknown output(s) {unknown}; this model gives {', '.join(known)}.")
    return InferRequest(batch=batch, id=request_id, outputs=names)


def output_tensors(model: Any, outputs: dict[str, np.ndarray], names: list[str] | None) -> list[dict[str, Any]]:
    """``outputs`` of an infer response: each graph output asked for (all by default), flat row-major data."""
    ports = {p.get_any_name(): p for p in model.compiled.outputs}
    tensors = []
    for name in names or list(ports):
        value = outputs[name]
        datatype = datatype_of(ports[name])
        data = value.astype(bool) if datatype == "BOOL" else value
        tensors.append({"name": name, "shape": list(value.shape), "datatype": datatype,
                        "data": data.reshape(-1).tolist()})
    return tensors
