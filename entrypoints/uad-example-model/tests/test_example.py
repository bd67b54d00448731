"""The example plugin checks itself with the uad conformance kit (fixtures from the pytest11 plugin)."""

import torch

torch.set_num_threads(2)


def test_registered() -> None:
    import uad_plugins

    spec = uad_plugins.get_spec("model", "plugin:example")
    assert spec.distribution == "uad-example-model" and spec.source == "entrypoint"


def test_contract(uad_model_contract) -> None:
    report = uad_model_contract("plugin:example")
    assert report.steps >= 1
    assert report.anomaly_map_shape[-2:] == (64, 64)
