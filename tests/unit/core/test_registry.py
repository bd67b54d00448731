"""Registry: collection per hook implementation, references, suggestions, conflicts, listing."""

from __future__ import annotations

import pytest

from uad_plugins import MetricSpec, ModelSpec, SynthesizerSpec, hookimpl
from uad_plugins.errors import BadReferenceError, ComponentConflictError, UnknownComponentError, WrongKindError
from uad_plugins.manager import module_from_hooks
from uad_plugins.registry import get_registry, parse_reference

PERLIN_TARGET = "uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plugin:pbas", ("plugin", "pbas")),
        ("plugin: pbas ", ("plugin", "pbas")),
        ("my_pkg.models.Foo", (None, "my_pkg.models.Foo")),
        ("pbas", (None, "pbas")),
        ("hf-hub:x/y", ("hf-hub", "x/y")),
        ("C:/data/model.ckpt", (None, "C:/data/model.ckpt")),
    ],
)
def test_parse_reference(value: str, expected: tuple) -> None:
    assert parse_reference(value) == expected


def test_hook_uad_register_models(fresh_manager) -> None:
    fresh_manager.add_plugin(module_from_hooks("m", uad_register_models=lambda: ModelSpec(
        name="tiny_m", target="a.b:C", summary="x")), name="m", source="local", distribution="t", version="1")
    spec = get_registry().get("model", "tiny_m")
    assert spec.plugin == "m" and spec.source == "local" and spec.distribution == "t"


def test_hook_uad_register_synthesizers(fresh_manager) -> None:
    def hook():
        yield SynthesizerSpec(name="s1", target=PERLIN_TARGET)
        yield SynthesizerSpec(name="s2", target=PERLIN_TARGET, aliases=("s_two",))

    fresh_manager.add_plugin(module_from_hooks("s", uad_register_synthesizers=hook), name="s", source="local",
                             distribution="t", version="1")
    names = [s.name for s in get_registry().list("synthesizer")]
    assert {"s1", "s2", "perlin"} <= set(names)
    assert get_registry().get("synthesizer", "s_two").name == "s2"


def test_hook_uad_register_metrics(fresh_manager) -> None:
    names = [s.name for s in get_registry().list("metric")]
    assert {"image_auroc", "pixel_auroc", "pixel_aupro", "image_f1max", "pixel_f1max"} <= set(names)
    spec = get_registry().get("metric", "pixel_auroc")
    assert spec.default_init_args()["fields"] == ["anomaly_map", "gt_mask"]
    fresh_manager.add_plugin(module_from_hooks("mm", uad_register_metrics=lambda: [MetricSpec(
        name="my_metric", target="anomalib.metrics:AUROC")]), name="mm", source="local", distribution="t",
        version="1")
    assert get_registry().get("metric", "my_metric").plugin == "mm"


def test_unknown_name_suggests_close_matches(fresh_manager) -> None:
    with pytest.raises(UnknownComponentError) as err:
        get_registry().resolve("synthesizer", "plugin:perln", flag="--synthesizer")
    text = str(err.value)
    assert "unknown synthesizer 'perln'" in text and "plugin:perlin" in text and "--synthesizer" in text


def test_bare_registered_name_is_an_error_with_hint(fresh_manager) -> None:
    with pytest.raises(BadReferenceError, match="Did you mean 'plugin:perlin'"):
        get_registry().resolve("synthesizer", "perlin")


def test_dotted_path_passes_through(fresh_manager) -> None:
    assert get_registry().resolve("model", "my_pkg.models.Foo") is None


def test_unknown_scheme(fresh_manager) -> None:
    with pytest.raises(BadReferenceError, match=r"(?s)unknown reference scheme .plugn.*Valid schemes: plugin"):
        get_registry().resolve("model", "plugn:pbas")


def test_wrong_kind(fresh_manager) -> None:
    with pytest.raises(WrongKindError, match=r"'perlin' .* is a synthesizer, not a model"):
        get_registry().resolve("model", "plugin:perlin", flag="--model")


def test_conflict_names_both_providers_and_only_fails_on_use(fresh_manager) -> None:
    hook = hookimpl(lambda: SynthesizerSpec(name="perlin", target=PERLIN_TARGET))
    mod = module_from_hooks("rival")
    mod.uad_register_synthesizers = hook
    fresh_manager.add_plugin(mod, name="rival", source="entrypoint", distribution="uad-rival", version="0.3")
    reg = get_registry()
    assert reg.list("metric")  # unrelated kinds still work
    with pytest.raises(ComponentConflictError) as err:
        reg.get("synthesizer", "perlin")
    text = str(err.value)
    assert "builtin, uad_plugins" in text and "uad-rival 0.3" in text and "UAD_DISABLE_PLUGINS=rival" in text


def test_hook_returning_garbage_is_isolated(fresh_manager) -> None:
    fresh_manager.add_plugin(module_from_hooks("bad", uad_register_models=lambda: ["pbas"]), name="bad",
                             source="local", distribution="t", version="1")
    reg = get_registry()
    assert "perlin" in [s.name for s in reg.list("synthesizer")]  # the other plugins still work
    assert "expected ModelSpec objects" in reg.failures()["bad"].error


def test_glob_listing(fresh_manager) -> None:
    assert [s.name for s in get_registry().list("metric", "pixel_a*")] == ["pixel_ap", "pixel_aupro", "pixel_auroc"]
