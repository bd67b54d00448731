"""Spec records: validation, defaults, loading and serialisation."""

from __future__ import annotations

import pytest

from uad_plugins.errors import ComponentLoadError, InvalidSpecError
from uad_plugins.specs import MetricSpec, ModelSpec, SynthesizerSpec


@pytest.mark.parametrize("name", ["PBAS", "1model", "my-model", "", "a b"])
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidSpecError, match="invalid name"):
        ModelSpec(name=name, target="pkg.mod:Cls")


@pytest.mark.parametrize("target", ["pkg.mod.Cls", "pkg.mod:", ":Cls", "pkg mod:Cls", 42])
def test_invalid_targets_are_rejected(target: object) -> None:
    with pytest.raises(InvalidSpecError, match="invalid target"):
        ModelSpec(name="m", target=target)  # type: ignore[arg-type]


def test_invalid_alias_and_config() -> None:
    with pytest.raises(InvalidSpecError, match="alias"):
        ModelSpec(name="m", target="a:B", aliases=("Bad",))
    with pytest.raises(InvalidSpecError, match="package:relative"):
        ModelSpec(name="m", target="a:B", config="defaults.yaml")


def test_class_path_reference_and_dict() -> None:
    spec = SynthesizerSpec(name="s", target="uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer",
                           tags=["image"], aliases=["s2"])
    assert spec.class_path == "uad_plugins.plugins.perlin.synthesizer.PerlinSynthesizer"
    assert spec.reference == "plugin:s"
    assert spec.tags == ("image",) and spec.aliases == ("s2",)
    data = spec.to_dict()
    assert data["name"] == "s" and data["kind"] == "synthesizer" and data["tags"] == ["image"]


def test_packaged_yaml_defaults_are_read() -> None:
    spec = SynthesizerSpec(name="perlin", target="a:B", config="uad_plugins.plugins.perlin:config.yaml")
    defaults = spec.default_init_args()
    assert defaults["probability"] == 1.0 and defaults["blend_factor"] == [0.2, 1.0]


def test_inline_defaults_and_test_config_layering() -> None:
    spec = ModelSpec(name="m", target="a:B", config={"a": 1, "b": 2}, test_config={"b": 3})
    assert spec.default_init_args() == {"a": 1, "b": 2}
    assert spec.test_init_args() == {"a": 1, "b": 3}


def test_missing_packaged_config_is_a_clear_error() -> None:
    spec = ModelSpec(name="m", target="a:B", config="uad_plugins:nope/missing.yaml")
    with pytest.raises(ComponentLoadError, match="cannot be read"):
        spec.default_init_args()


def test_load_checks_import_and_base_class() -> None:
    ok = SynthesizerSpec(name="p", target="uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer")
    assert ok.load().__name__ == "PerlinSynthesizer"
    wrong_base = MetricSpec(name="x", target="uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer")
    with pytest.raises(ComponentLoadError, match=r"not a subclass of anomalib\.metrics:AnomalibMetric"):
        wrong_base.load()
    missing = ModelSpec(name="y", target="no_such_package_xyz.mod:Cls")
    with pytest.raises(ComponentLoadError, match=r"could not be imported.*ModuleNotFoundError"):
        missing.load()
