"""The one door: create_* and list_components."""

from __future__ import annotations

import pytest

import uad_plugins
from uad_plugins.errors import ConfigError, UnknownComponentError
from uad_plugins.provenance import spec_of


def test_create_synthesizer_layers_user_args_over_defaults(fresh_manager) -> None:
    synth = uad_plugins.create_synthesizer("plugin:perlin", probability=0.5)
    assert synth.generator.probability == 0.5
    assert spec_of(synth, "synthesizer").name == "perlin"


def test_create_metric_uses_packaged_fields(fresh_manager) -> None:
    metric = uad_plugins.create_metric("plugin:pixel_aupro")
    assert metric.fields == ["anomaly_map", "gt_mask"] and metric.name == "pixel_AUPRO"


def test_create_from_mapping_and_class_path(fresh_manager) -> None:
    synth = uad_plugins.create_synthesizer(
        {"class_path": "uad_plugins.plugins.perlin.synthesizer.PerlinSynthesizer", "init_args": {"probability": 0.1}})
    assert synth.generator.probability == 0.1


def test_bad_arguments_are_config_errors(fresh_manager) -> None:
    with pytest.raises(ConfigError, match="cannot build synthesizer plugin:perlin"):
        uad_plugins.create_synthesizer("plugin:perlin", no_such_option=1)
    with pytest.raises(ConfigError, match="probability must be in"):
        uad_plugins.create_synthesizer("plugin:perlin", probability=3.0)


def test_unknown_component(fresh_manager) -> None:
    with pytest.raises(UnknownComponentError):
        uad_plugins.create_model("plugin:does_not_exist")


def test_list_components(fresh_manager) -> None:
    kinds = {s.kind for s in uad_plugins.list_components()}
    assert kinds >= {"metric", "synthesizer"}
    assert all(s.kind == "metric" for s in uad_plugins.list_components("metric"))


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = ("import sys, uad_plugins; uad_plugins.list_components(); "
            "bad = [m for m in ('torch', 'lightning', 'anomalib') if m in sys.modules]; print(bad); "
            "raise SystemExit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
