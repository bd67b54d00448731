"""Building the OpenVINO graph: the model (with its pre-processing) converted, then post-processing appended.

The model part goes through ``torch.export`` (``openvino.convert_model`` on the exported program) with a dynamic
batch and the fixed input size of the model's pre-processing (images: ``[N, 3, H, W]``; signal models:
``[N, K, Q]`` from ``model.signal_shape``, maps ``[N, K, Q]``). Post-processing — anomalib's min-max normalisation
centred on the threshold, then the thresholds — is appended as OpenVINO ops from :class:`PostStats`, so FP32, FP16
and INT8 bundles are built the same way and INT8 can carry statistics re-fitted after quantization.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from uad_plugins.errors import UadError
from uad_plugins.protocols import modality_of

__all__ = ["EXPORTABLE_MODALITIES", "PostStats", "RawExportModule", "append_postprocessing", "convert_raw",
           "input_size_of", "sample_shape"]

#: data kinds a bundle can hold
EXPORTABLE_MODALITIES = ("image", "signal")


class ExportError(UadError):
    """The model cannot be exported (an op that does not convert, a failed parity gate, ...)."""


@dataclass(frozen=True)
class PostStats:
    """Normalisation statistics and thresholds in raw score units (anomalib's PostProcessor buffers)."""

    image_threshold: float
    pixel_threshold: float
    image_min: float
    image_max: float
    pixel_min: float
    pixel_max: float
    normalized_image_threshold: float = 0.5
    normalized_pixel_threshold: float = 0.5

    @classmethod
    def from_post_processor(cls, post: Any) -> PostStats:
        """Read the fitted buffers of an anomalib ``PostProcessor``; NaN (never fitted) is an error."""
        values = {
            "image_threshold": float(post.image_threshold), "pixel_threshold": float(post.pixel_threshold),
            "image_min": float(post.image_min), "image_max": float(post.image_max),
            "pixel_min": float(post.pixel_min), "pixel_max": float(post.pixel_max),
            "normalized_image_threshold": float(post.normalized_image_threshold),
            "normalized_pixel_threshold": float(post.normalized_pixel_threshold),
        }
        missing = [k for k, v in values.items() if math.isnan(v)]
        if missing:
            raise ExportError(f"the model's post-processing was never fitted ({', '.join(missing)} are NaN).",
                              hint="Export a checkpoint from 'uad fit' (validation fits thresholds and "
                              "normalisation), or run 'uad validate --ckpt_path ...' first.")
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)




def _check_modality(model: Any) -> str:
    modality = modality_of(model)
    if modality not in EXPORTABLE_MODALITIES:
        raise ExportError(f"{type(model).__name__} is a {modality} model; OpenVINO bundles hold "
                          f"{' or '.join(EXPORTABLE_MODALITIES)} models only.",
                          hint="Use the model with 'uad test'/'uad predict' (eager) instead.")
    return modality


def input_size_of(model: Any) -> tuple[int, int]:
    """The (height, width) the model's pre-processing resizes to; for a signal model its ``(leads, length)``."""
    from torchvision.transforms.v2 import Resize

    if _check_modality(model) == "signal":
        shape = getattr(model, "signal_shape", None)
        if not shape or len(shape) != 2:
            raise ExportError(f"cannot tell the input shape of the signal model {type(model).__name__}: it has no "
                              "signal_shape (leads, length).",
                              hint="A signal model must expose signal_shape = (K, Q), the window it was built for.")
        return int(shape[0]), int(shape[1])

    transform = getattr(getattr(model, "pre_processor", None), "transform", None)
    stack = list(getattr(transform, "transforms", [transform])) if transform is not None else []
    for t in stack:
        if isinstance(t, Resize) and t.size is not None:
            size = list(t.size)
            return (int(size[0]), int(size[-1]))
    size = getattr(model, "input_size", None)
    if size:
        return int(size[0]), int(size[1])
    raise ExportError(f"cannot tell the input size of {type(model).__name__}: its pre-processor has no Resize.",
                      hint="Give the model a pre-processor that resizes to a fixed size.")


def sample_shape(model: Any) -> tuple[int, ...]:
    """The shape of one input of the graph: ``(3, H, W)`` for an image model, ``(K, Q)`` for a signal model."""
    size = input_size_of(model)
    return size if modality_of(model) == "signal" else (3, *size)


class RawExportModule(nn.Module):
    """Pre-processing (normalisation) + the model, returning raw ``(pred_score [N], anomaly_map)``: the map is
    ``[N, 1, H, W]`` for an image model and ``[N, K, Q]`` (leads, time) for a signal model."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        pre = getattr(model, "pre_processor", None)
        self.pre_processor = pre if isinstance(pre, nn.Module) else None
        self.model = model.model
        self.map_rank = 3 if modality_of(model) == "signal" else 4

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pre_processor(image) if self.pre_processor is not None else image
        out = self.model(x)
        anomaly_map = out.anomaly_map
        if anomaly_map.ndim == self.map_rank - 1:
            anomaly_map = anomaly_map.unsqueeze(1)
        score = out.pred_score if out.pred_score is not None else anomaly_map.amax(dim=(-3, -2, -1))
        return score.reshape(-1), anomaly_map


def convert_raw(model: Any, input_size: tuple[int, int]) -> tuple[Any, bool]:
    """The raw module as an ``openvino.Model`` (input ``input``, outputs ``raw_score`` and ``raw_map``).

    ``input_size`` is :func:`input_size_of`: ``(H, W)`` of an image model (input ``[N, 3, H, W]`` in [0, 1]) or
    ``(K, Q)`` of a signal model (input ``[N, K, Q]``, windows as the datamodule prepares them).
    Returns ``(model, dynamic_batch)``. A dynamic batch is tried first; a model whose forward fixes the batch size
    (anomalib's Patchcore does) is exported at batch 1 instead, and the edge runtime feeds it one input at a time.
    """
    import openvino as ov

    module = RawExportModule(model).eval()
    signal = modality_of(model) == "signal"
    shape = tuple(input_size) if signal else (3, *input_size)
    generator = torch.Generator().manual_seed(0)

    def example(batch: int) -> torch.Tensor:
        # signals are roughly zero-centred with unit scale; images lie in [0, 1]
        return torch.randn(batch, *shape, generator=generator) if signal else torch.rand(batch, *shape,
                                                                                       generator=generator)

    attempts = [(example(2), ({0: torch.export.Dim("batch", min=1, max=4096)},)), (example(1), None)]
    errors = []
    for example, dynamic in attempts:
        try:
            with torch.no_grad():
                program = torch.export.export(module, (example,), dynamic_shapes=dynamic, strict=False)
                ov_model = ov.convert_model(program)
        except Exception as exc:  # noqa: BLE001 - try the static export, then report both failures
            errors.append(f"{type(exc).__name__}: {str(exc)[:400]}")
            continue
        dynamic_batch = dynamic is not None
        ov_model.inputs[0].get_tensor().set_names({"input"})
        ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([-1 if dynamic_batch else 1, *shape])})
        ov_model.outputs[0].get_tensor().set_names({"raw_score"})
        ov_model.outputs[1].get_tensor().set_names({"raw_map"})
        return ov_model, dynamic_batch
    raise ExportError(f"{type(model).__name__} could not be converted to OpenVINO: " + " | ".join(errors),
                      hint="Its eval-mode forward must be traceable by torch.export (no numpy, no data-dependent "
                      "Python control flow). Run with --traceback for details.")


def append_postprocessing(raw_model: Any, stats: PostStats, *, keep_raw: bool = False) -> Any:
    """A new ``openvino.Model``: ``raw_model`` followed by normalisation and thresholds.

    Outputs: ``pred_score [N]``, ``pred_label [N]``, ``anomaly_map`` and ``pred_mask`` (``[N,1,H,W]`` for images,
    ``[N,K,Q]`` for signals); with ``keep_raw`` also ``raw_score [N]`` and ``raw_map`` (the model's own units,
    before normalisation: the normalised score is clipped to [0, 1], so only raw scores rank every sample).
    """
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    def const(value: float) -> Any:
        return ops.constant(np.float32(value))

    def normalise(node: Any, low: float, high: float, threshold: float) -> Any:
        span = high - low
        if span == 0:  # degenerate: above / at / below the threshold -> 1 / 0.5 / 0
            above = ops.convert(ops.greater(node, const(threshold)), "f32")
            below = ops.convert(ops.less(node, const(threshold)), "f32")
            return ops.add(ops.multiply(ops.subtract(above, below), const(0.5)), const(0.5))
        shifted = ops.add(ops.divide(ops.subtract(node, const(threshold)), const(span)), const(0.5))
        return ops.clamp(shifted, 0.0, 1.0)

    # the values feeding the raw model's results (its Result nodes themselves are left out of the new model)
    raw_score, raw_map = (result.input_value(0) for result in raw_model.get_results()[:2])
    score = normalise(raw_score, stats.image_min, stats.image_max, stats.image_threshold)
    amap = normalise(raw_map, stats.pixel_min, stats.pixel_max, stats.pixel_threshold)
    label = ops.greater(score, const(stats.normalized_image_threshold))
    mask = ops.greater(amap, const(stats.normalized_pixel_threshold))
    results = []
    outputs = [(score, "pred_score"), (label, "pred_label"), (amap, "anomaly_map"), (mask, "pred_mask")]
    if keep_raw:
        outputs += [(raw_score, "raw_score"), (raw_map, "raw_map")]
    for node, name in outputs:
        result = ops.result(node)
        result.output(0).get_tensor().set_names({name})
        results.append(result)
    model = ov.Model(results, raw_model.get_parameters(), "uad_bundle")
    return model
