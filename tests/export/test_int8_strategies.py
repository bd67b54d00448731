"""INT8 strategies (uad_plugins.export.quantize): where quantizers go, and why it matters for anomaly heads.

Regression for the PRADOT INT8 collapse (validation image and pixel AUROC exactly 0.500): plain post-training
quantization puts 8-bit quantizers on the feature norm, the cosine cost ``1 - cos`` (range [0, 1.4] at 256 levels)
and the per-image normalisation, whose informative range is a few hundredths, so the cost map collapses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

torch.set_num_threads(2)


class CosineHead(nn.Module):
    """A conv feature extractor and PRADOT's kind of head: the cosine cost to the nearest prototype, divided by
    the image's largest cost (outputs ``raw_score``, ``raw_map``, as a converted uad model has)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1, stride=2)
            self.prototypes = nn.Parameter(torch.randn(8, 32))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.conv2(F.relu(self.conv1(images)))  # [B, 32, H/2, W/2]
        batch, _, height, width = feats.shape
        flat = feats.flatten(2).transpose(1, 2)  # [B, HW, C]
        cost = 1.0 - F.normalize(flat, dim=-1) @ F.normalize(self.prototypes, dim=-1).T
        cost = cost / cost.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        amap = cost.amin(dim=2).reshape(batch, 1, height, width)
        return amap.amax(dim=(1, 2, 3)), amap


def _convert(module: nn.Module):
    import openvino as ov

    with torch.no_grad():
        program = torch.export.export(module.eval(), (torch.rand(1, 3, 32, 32),), strict=False)
    model = ov.convert_model(program)
    model.outputs[0].get_tensor().set_names({"raw_score"})
    model.outputs[1].get_tensor().set_names({"raw_map"})
    return model


def _samples(n: int, labels: bool = False):
    from uad_plugins.export.samples import Samples

    images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    lab = torch.arange(n) % 2 if labels else None
    return Samples(images, lab, None, "validation" if labels else "train")


def _quantizer_consumers(model) -> set[str]:
    kinds = set()
    for op in model.get_ops():
        if op.get_type_name() == "FakeQuantize":
            kinds |= {target.get_node().get_type_name() for target in op.output(0).get_target_inputs()}
    return kinds


def _map_error(raw, quantized, samples) -> float:
    import openvino as ov

    from uad_plugins.export.parity import run_compiled

    core = ov.Core()
    ref = run_compiled(core.compile_model(raw, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), samples.images, 1)
    out = run_compiled(core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}), samples.images, 1)
    return float(np.abs(ref["raw_map"] - out["raw_map"]).mean())


def test_backbone_strategy_quantizes_only_convolutions_and_keeps_the_cost_map() -> None:
    from uad_plugins.export.quantize import quantize_int8

    raw = _convert(CosineHead())
    calibration, check = _samples(16), _samples(8)
    ptq = quantize_int8(raw, calibration, check, strategy="ptq", progress=lambda _m: None)
    backbone = quantize_int8(raw, calibration, check, strategy="backbone", progress=lambda _m: None)
    # plain PTQ also quantizes the head: the norm, the cosine cost and its normalisation
    assert _quantizer_consumers(ptq.model) - {"Convolution", "GroupConvolution"}
    assert _quantizer_consumers(backbone.model) <= {"Convolution", "GroupConvolution"}
    assert backbone.fake_quantize_nodes > 0 and backbone.strategy == "backbone"
    backbone_error, ptq_error = _map_error(raw, backbone.model, check), _map_error(raw, ptq.model, check)
    print(f"mean |map error|: backbone {backbone_error:.5f}, ptq {ptq_error:.5f}")
    assert backbone_error < 0.5 * ptq_error


def test_accuracy_control_stops_at_the_first_model_within_budget() -> None:
    from uad_plugins.export.quantize import quantize_int8

    raw = _convert(CosineHead())
    result = quantize_int8(raw, _samples(16), _samples(12, labels=True), strategy="accuracy_control", max_drop=1.0,
                           progress=lambda _m: None)
    assert result.strategy == "accuracy_control" and result.fake_quantize_nodes > 0
    assert set(result.describe()) == {"strategy", "seconds", "kept_in_float", "fake_quantize_nodes"}


def test_accuracy_control_returns_convolutions_to_float_when_over_budget() -> None:
    from uad_plugins.export.quantize import quantize_int8

    raw = _convert(CosineHead())
    result = quantize_int8(raw, _samples(16), _samples(24, labels=True), strategy="accuracy_control", max_drop=0.0,
                           progress=lambda _m: None)
    convolutions = {op.get_friendly_name() for op in raw.get_ops() if op.get_type_name() == "Convolution"}
    assert result.kept_in_float and set(result.kept_in_float) <= convolutions


def test_accuracy_control_needs_both_classes() -> None:
    from uad_plugins.export.graph import ExportError
    from uad_plugins.export.quantize import quantize_int8

    with pytest.raises(ExportError, match="both normal and anomalous"):
        quantize_int8(_convert(CosineHead()), _samples(4), _samples(4), strategy="accuracy_control")


def test_unknown_strategy_is_refused_before_the_checkpoint_is_read(tmp_path, uad) -> None:
    code, _, err = uad("export", "--ckpt_path", tmp_path / "missing.ckpt", "--precision", "int8",
                       "--int8_strategy", "magic")
    assert code == 2 and "--int8_strategy 'magic'" in err and "accuracy_control" in err
    assert "Traceback" not in err


def test_recipe_checks_the_int8_strategy(tmp_path) -> None:
    from uad_plugins.bench.recipe import load_recipe
    from uad_plugins.errors import ConfigError

    text = ("name: r\nmodels: [{name: p, model: plugin:pbas}]\ndata: [{class_path: UadDemo}]\n"
            "export: {int8_strategy: %s}\n")
    path = tmp_path / "r.yaml"
    path.write_text(text % "backbone")
    assert load_recipe(path).int8_strategy == "backbone"
    path.write_text(text % "fastest")
    with pytest.raises(ConfigError, match=r"export\.int8_strategy"):
        load_recipe(path)


class ConvChain(nn.Module):
    """Seven 3x3 convolutions in a row (residual sums around convolutions 4 and 5), one output map."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1) for i in range(7))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x)) + (x if i in (4, 5) else 0)
        amap = x.mean(dim=1, keepdim=True)
        return amap.amax(dim=(1, 2, 3)), amap


def _ordered_convolutions(model) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]


def test_boundary_convolutions_are_the_first_layer_and_the_last_two_before_the_output() -> None:
    from uad_plugins.export.quantize import boundary_convolutions, quantize_int8

    raw = _convert(ConvChain())
    convs = _ordered_convolutions(raw)
    assert len(convs) == 7
    # within two convolutions of the output along any path: conv 6, then conv 5 and, through the residual sums
    # that skip it, conv 4 and conv 3; conv 1 and conv 2 are interior
    boundary = {convs[0], convs[3], convs[4], convs[5], convs[6]}
    assert boundary_convolutions(raw) == sorted(boundary)
    backbone = quantize_int8(raw, _samples(8), _samples(4), strategy="backbone", progress=lambda _m: None)
    assert set(backbone.kept_in_float) == boundary and backbone.fake_quantize_nodes > 0
    # a model made only of boundary convolutions quantizes them all rather than nothing
    assert boundary_convolutions(_convert(CosineHead())) == []
