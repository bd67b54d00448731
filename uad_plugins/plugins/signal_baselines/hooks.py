"""Registers the trivial signal baselines ``signal_mean_distance``, ``signal_std`` and ``signal_nearest``."""

from uad_plugins import ModelSpec, hookimpl

_MODULE = "uad_plugins.plugins.signal_baselines.model"
_CONFIG = "uad_plugins.plugins.signal_baselines:config.yaml"
_TEST = {"n_leads": 1, "length": 64}


@hookimpl
def uad_register_models():
    yield ModelSpec(
        name="signal_mean_distance",
        target=f"{_MODULE}:MeanWindowDistance",
        summary="Trivial baseline (signals): squared distance to the mean training window.",
        config=_CONFIG, test_config=_TEST, tags=("signal", "baseline", "exportable"),
        license="Apache-2.0 (our implementation)",
    )
    yield ModelSpec(
        name="signal_std",
        target=f"{_MODULE}:WindowStd",
        summary="Trivial baseline (signals): the window's own standard deviation; learns nothing.",
        config=_CONFIG, test_config=_TEST, tags=("signal", "baseline", "exportable"),
        license="Apache-2.0 (our implementation)",
    )
    yield ModelSpec(
        name="signal_nearest",
        target=f"{_MODULE}:NearestWindowDistance",
        summary="Trivial baseline (signals): distance to the nearest training window (1-NN).",
        config=_CONFIG, test_config=_TEST, tags=("signal", "baseline", "exportable"),
        license="Apache-2.0 (our implementation)",
    )
