"""INT8 quantization of a converted model, judged on the validation metric the parity gate uses.

Strategies (``uad export --int8_strategy``):

- ``backbone``: post-training quantization of the backbone's interior convolutions. Every other operation stays in
  floating point (every matrix product, and so every feature distance, cosine and attention score after the
  backbone), and so do the *boundary* convolutions (:func:`boundary_convolutions`): the first layer, which reads
  the image, and the last two convolutions before each feature tap, whose rounding the head reads undamped.
- ``accuracy_control`` (default): NNCF's ``quantize_with_accuracy_control`` of the interior convolutions and the
  matrix products (linear layers, projections); while the validation metric drops by more than the budget it
  returns the operations that hurt it most to floating point, one ranked group at a time. The metric is the
  gate's own: image and pixel AUROC (sample and point AUROC for signals) of the raw outputs on the honest
  validation samples, worst of the two, relative to the FP32 graph.
- ``ptq``: plain NNCF post-training quantization of every operation (the fastest, and for many anomaly models
  not within budget: the distances and normalisations after the backbone collapse at 8 bits).

Whatever the strategy, the parity gate (:mod:`uad_plugins.export.bundle`) stays the final judge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from uad_edge.manifest import INT8_STRATEGIES
from uad_plugins.export.graph import ExportError
from uad_plugins.export.parity import auroc, raw_outputs
from uad_plugins.export.samples import Samples

__all__ = ["INT8_STRATEGIES", "QuantizedModel", "boundary_convolutions", "budget_aurocs", "calibration_items",
           "quantize_int8"]



@dataclass
class QuantizedModel:
    """An INT8 ``openvino.Model`` and how it was made."""

    model: Any
    strategy: str
    seconds: float
    #: convolutions (by friendly name) the accuracy-control search returned to floating point
    kept_in_float: list[str] = field(default_factory=list)
    #: quantized operations (FakeQuantize nodes) left in the graph
    fake_quantize_nodes: int = 0

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "seconds": round(self.seconds, 1), "kept_in_float": self.kept_in_float,
                "fake_quantize_nodes": self.fake_quantize_nodes}


def budget_aurocs(raw_scores: np.ndarray, raw_maps: np.ndarray, samples: Samples) -> dict[str, float]:
    """The INT8 budget's AUROCs of raw outputs: ``sample`` (image) and, where masks exist, ``map`` (pixel)."""
    labels = samples.labels.numpy()
    values = {"sample": auroc(np.asarray(raw_scores).reshape(-1), labels)}
    if samples.masks is not None and bool(samples.masks.any()):
        values["map"] = auroc(np.asarray(raw_maps).ravel(), samples.masks.numpy().ravel())
    return values


def _item(samples: Samples, index: int) -> np.ndarray:
    """Input ``index`` of ``samples`` as a contiguous float32 ``[1, ...]`` array (one NNCF dataset item)."""
    return np.ascontiguousarray(samples.images[index:index + 1].numpy(), dtype=np.float32)


def calibration_items(samples: Samples) -> list[np.ndarray]:
    """Each input of ``samples`` as a contiguous float32 ``[1, ...]`` array (NNCF's calibration items)."""
    return [_item(samples, i) for i in range(len(samples))]


def _count_fake_quantize(model: Any) -> int:
    return sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")


#: the operations the ``backbone`` strategy quantizes (their inputs: activations per tensor, weights per channel)
CONVOLUTIONS = frozenset({"Convolution", "GroupConvolution"})
#: what ``accuracy_control`` quantizes besides: the matrix products (linear layers, projections; with them PBAS's
#: embedding and discriminator run in INT8, 1.4x faster at batch 1 than with the convolutions alone)
MATRIX_PRODUCTS = frozenset({"MatMul"})


def _convolutions_next_to(model: Any, starts: list[Any], upstream: bool, depth: int) -> set[str]:
    """The convolutions reached from ``starts`` through at most ``depth`` convolutions (walking towards the inputs
    when ``upstream``, towards the outputs otherwise)."""
    found: set[str] = set()
    seen: set[tuple[str, int]] = set()
    stack = [(node, depth) for node in starts]
    while stack:
        node, left = stack.pop()
        if (node.get_name(), left) in seen:  # Python wrappers are new objects on each access: compare unique names
            continue
        seen.add((node.get_name(), left))
        if node.get_type_name() in CONVOLUTIONS:
            found.add(node.get_friendly_name())
            left -= 1
            if left == 0:
                continue
        if upstream:
            stack.extend((value.get_node(), left) for value in node.input_values())
        else:
            stack.extend((target.get_node(), left) for port in node.outputs() for target in port.get_target_inputs())
    return found


#: how many convolutions deep the boundary reaches back from each feature tap
TAP_DEPTH = 2


def boundary_convolutions(model: Any) -> list[str]:
    """The convolutions that read the input directly (the first layer) and those within :data:`TAP_DEPTH`
    convolutions of an output (the last block before each feature tap, its residual branches included): the layers
    where 8-bit rounding reaches the scores undamped. Empty when every convolution is one of them (nothing would
    be left to quantize).

    Chosen on the honest validation splits of PBAS and PRADOT checkpoints on bottle and bsdata (Lite0 backbone):
    quantizing the first convolution cost PBAS 8 of its 10.5 pixel-AUROC points on bottle, the last block's the
    rest; one convolution deep left 1.2 points, two left 0.4 (``tools/int8_study.py``, docs/deploy.md)."""
    first = _convolutions_next_to(model, list(model.get_parameters()), upstream=False, depth=1)
    last = _convolutions_next_to(model, list(model.get_results()), upstream=True, depth=TAP_DEPTH)
    every = {op.get_friendly_name() for op in model.get_ops() if op.get_type_name() in CONVOLUTIONS}
    boundary = first | last
    return sorted(boundary) if every - boundary else []


def _float_scope(model: Any, quantized_types: frozenset[str]) -> Any:
    """NNCF's ignored scope that quantizes only ``quantized_types`` (never the inputs of a residual sum, a feature
    tap, a norm, a cosine, a distance, a reduction or an upsampling) and keeps the boundary convolutions in
    floating point."""
    import nncf

    every_type = {op.get_type_name() for op in model.get_ops()}
    types = sorted(every_type - quantized_types - {"Parameter", "Constant", "Result"})
    names = boundary_convolutions(model)
    return nncf.IgnoredScope(types=types, names=names, validate=False) if types or names else None


def quantize_int8(raw_model: Any, calibration: Samples, validation: Samples, *, strategy: str = "accuracy_control",
                  max_drop: float = 0.01, batch_size: int = 1,
                  fp32_outputs: tuple[np.ndarray, np.ndarray] | None = None,
                  progress: Callable[[str], None] = print) -> QuantizedModel:
    """Quantize ``raw_model`` (outputs ``raw_score``, ``raw_map``) to INT8 with ``strategy``.

    ``calibration``: normal training inputs; ``validation``: the honest validation samples (labels, and masks
    where known), on which ``accuracy_control`` measures the drop it may spend (``max_drop``, absolute AUROC)
    against ``fp32_outputs`` (the FP32 graph's raw outputs on ``validation``; computed here when not given).
    """
    import nncf

    if strategy not in INT8_STRATEGIES:
        raise ExportError(f"unknown INT8 strategy '{strategy}'.", hint=f"Choose one of: {', '.join(INT8_STRATEGIES)}.")
    if len(calibration) == 0:
        raise ExportError("the calibration set is empty: INT8 quantization needs normal training inputs.",
                          hint="Check the datamodule's training split.")
    what = "signal windows" if calibration.modality == "signal" else "images"
    items = calibration_items(calibration)
    started = time.perf_counter()
    if strategy in ("ptq", "backbone"):
        scope = _float_scope(raw_model, CONVOLUTIONS) if strategy == "backbone" else None
        progress(f"quantizing to INT8 ({strategy}) with NNCF post-training quantization on {len(items)} "
                 f"calibration {what}")
        quantized = nncf.quantize(raw_model, nncf.Dataset(items), subset_size=len(items), ignored_scope=scope)
        return QuantizedModel(quantized, strategy, time.perf_counter() - started,
                              kept_in_float=_convolutions_left_in_float(quantized),
                              fake_quantize_nodes=_count_fake_quantize(quantized))

    if validation.labels is None or len(set(validation.labels.tolist())) < 2:
        raise ExportError("INT8 with accuracy control needs validation samples with both normal and anomalous "
                          "inputs.", hint="Use the default honest validation (synthetic anomalies), or "
                          "--int8_strategy ptq.")
    if fp32_outputs is None:
        import openvino as ov

        fp32_outputs = raw_outputs(ov.Core().compile_model(raw_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}),
                                   validation, batch_size)
    reference = budget_aurocs(*fp32_outputs, validation)
    validation_items = list(range(len(validation)))

    def worst_margin(compiled: Any, indices: Any) -> tuple[float, list[list[np.ndarray]]]:
        # the gate's metric on the items NNCF hands over: 1 + the worst budget AUROC relative to the FP32 graph (1 =
        # no loss; NNCF divides by the FP32 model's metric even for an absolute drop, so it must not be 0); the raw
        # outputs per item go back too, which makes NNCF rank operations by how far they move the outputs (an AUROC
        # has no per-item value)
        subset = validation.take(torch.as_tensor(list(indices), dtype=torch.long))
        scores, maps = raw_outputs(compiled, subset, batch_size)
        outputs = [[scores[i:i + 1], maps[i:i + 1]] for i in range(len(subset))]
        if len(set(subset.labels.tolist())) < 2:
            return 1.0, outputs
        values = budget_aurocs(scores, maps, subset)
        return 1.0 + min(values[key] - reference[key] for key in reference), outputs

    progress(f"quantizing to INT8 with NNCF accuracy control on {len(items)} calibration {what}; budget "
             f"{max_drop * 100:.2f} AUROC points on {len(validation)} validation samples")
    quantized = nncf.quantize_with_accuracy_control(
        raw_model, nncf.Dataset(items), nncf.Dataset(validation_items, lambda index: _item(validation, index)),
        worst_margin,
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(items),
        ignored_scope=_float_scope(raw_model, CONVOLUTIONS | MATRIX_PRODUCTS))
    return QuantizedModel(quantized, strategy, time.perf_counter() - started,
                          kept_in_float=_convolutions_left_in_float(quantized),
                          fake_quantize_nodes=_count_fake_quantize(quantized))


def _convolutions_left_in_float(quantized: Any) -> list[str]:
    """Convolutions of the quantized model with no quantizer on their input: the boundary convolutions and the ones
    the accuracy-control search returned to floating point."""
    kept = []
    for op in quantized.get_ops():
        if op.get_type_name() in CONVOLUTIONS and op.input_value(0).get_node().get_type_name() != "FakeQuantize":
            kept.append(op.get_friendly_name())
    return sorted(kept)
