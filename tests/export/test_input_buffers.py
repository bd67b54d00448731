"""Regression: our inference calls never leave a caller's array bound to an OpenVINO request.

With OpenVINO's default ``share_inputs=True`` a ``CompiledModel.__call__`` keeps the caller's array as the request's
input tensor after returning, and an inference on another request of the same dynamic-batch compiled model then
writes into that array. In the parity gate this silently changed one validation image between the FP32 and the INT8
measurement (PRADOT on bsdata: INT8 image AUROC 0.982 instead of 0.996, depending on what ran before).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _dynamic_conv_model():
    import openvino as ov

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 1, 3, padding=1)).eval()
    graph = ov.convert_model(net, example_input=torch.zeros(1, 3, 32, 32), input=[(-1, 3, 32, 32)])
    graph.outputs[0].get_tensor().set_names({"map"})
    return ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _another_request(compiled, shape: tuple[int, ...]) -> None:
    compiled.create_infer_request().infer({0: np.random.default_rng(1).random(shape, dtype=np.float32)})


def test_run_compiled_does_not_lend_the_callers_images() -> None:
    from uad_plugins.export.parity import run_compiled

    torch.set_num_threads(2)
    compiled = _dynamic_conv_model()
    images = torch.rand(6, 3, 32, 32)
    before = images.clone()
    first = run_compiled(compiled, images, batch_size=4)["map"]
    _another_request(compiled, (1, 3, 32, 32))
    assert torch.equal(images, before)
    again = run_compiled(compiled, images, batch_size=4)["map"]
    np.testing.assert_array_equal(first, again)


def test_edge_model_infer_does_not_lend_the_users_array(tiny_edge_bundle: Path) -> None:
    from uad_edge import load_bundle

    model = load_bundle(tiny_edge_bundle)
    height, width = model.input_size
    batch = np.random.default_rng(0).random((3, 3, height, width), dtype=np.float32)
    before = batch.copy()
    first = model.predict(batch)
    _another_request(model.compiled, (1, 3, height, width))
    np.testing.assert_array_equal(batch, before)
    second = model.predict(batch)
    np.testing.assert_array_equal(first.raw_score, second.raw_score)
