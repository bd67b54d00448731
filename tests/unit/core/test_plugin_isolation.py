"""Plugin code cannot end the process, and name clashes name both providers (security issue items 5 and 11).

Item 5: whatever plugin code raises (``SystemExit`` from ``sys.exit()``, ``GeneratorExit``, ...) is recorded as a
failure of that plugin, wherever the code runs: module import (built-in, entry point, ``--plugin-file``),
registration, ``uad_register_*`` hooks, and the import of a spec's target. ``KeyboardInterrupt`` propagates.

Item 11: the registry ranks plugins by source (builtin < entrypoint < local), then load order, never by pluggy's
order; a component name two plugins provide fails on use naming both; a plugin *name* that is already taken is
refused and recorded against the refused package, never against the plugin holding the name.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

import pytest

from uad_plugins import ModelSpec, SynthesizerSpec, create_model, hookimpl, list_components
from uad_plugins.errors import ComponentConflictError, ComponentLoadError, PluginLoadError
from uad_plugins.manager import UadPluginManager, module_from_hooks, using_plugin_manager
from uad_plugins.registry import Registry, get_registry

PERLIN_TARGET = "uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer"

GOOD = f'''
from uad_plugins import SynthesizerSpec, hookimpl

@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(name="iso_good_synth", target="{PERLIN_TARGET}", summary="test")
'''

RIVAL_PBAS = f'''
from uad_plugins import ModelSpec, hookimpl

@hookimpl
def uad_register_models():
    return ModelSpec(name="pbas", target="{PERLIN_TARGET}", summary="not the real PBAS")
'''


class FakeDistribution(md.Distribution):
    """An installed distribution without a site-packages: metadata and entry points from strings."""

    def __init__(self, name: str, version: str, entry_points: dict[str, str]) -> None:
        self._files = {
            "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "entry_points.txt": "[uad_plugins]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()),
        }

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path) -> Path:  # pragma: no cover - never used: nothing is read from disk
        return Path(path)


def entry_points(dist_name: str, version: str, **eps: str) -> list[md.EntryPoint]:
    """Entry points of the group ``uad_plugins`` whose ``.dist`` is a fake distribution (name + version)."""
    return list(FakeDistribution(dist_name, version, eps).entry_points.select(group="uad_plugins"))


# ---------------------------------------------------------------------------------------------- item 5: sys.exit


def test_entry_point_whose_import_calls_sys_exit_is_a_failure_of_its_package(plugin_module) -> None:
    plugin_module("iso_exit_on_import", "import sys\nsys.exit(0)\n")
    plugin_module("iso_good_ep", GOOD)
    pm = UadPluginManager()
    pm.load_entrypoints([*entry_points("uad-exiter", "1.2", exiter="iso_exit_on_import"),
                         *entry_points("uad-good", "0.1", good="iso_good_ep")])
    failure = pm.failures["exiter"]
    assert "called sys.exit(0)" in failure.error and failure.error.startswith("SystemExit")
    assert (failure.distribution, failure.version, failure.source) == ("uad-exiter", "1.2", "entrypoint")
    assert "Traceback" in failure.traceback
    assert "good" in pm.records  # the next entry point still loads


def test_plugin_file_that_calls_sys_exit_is_a_failure(tmp_path: Path) -> None:
    file = tmp_path / "iso_exit_file.py"
    file.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    pm = UadPluginManager()
    assert pm.load_plugin_file(file) is False
    assert "called sys.exit(3)" in pm.failures["iso_exit_file"].error
    assert "uad_local_plugin_iso_exit_file" not in sys.modules


def test_builtin_whose_import_calls_sys_exit_is_a_failure(plugin_module) -> None:
    plugin_module("iso_exit_builtin", "raise SystemExit('bye')\n")
    pm = UadPluginManager()
    pm.load_builtins(["iso_exit_builtin", "uad_plugins.plugins.perlin.hooks"])
    assert "called sys.exit('bye')" in pm.failures["iso_exit_builtin"].error
    assert pm.failures["iso_exit_builtin"].distribution == "uad_plugins"
    assert "perlin" in pm.records


@pytest.mark.parametrize("kind", ["models", "synthesizers", "metrics"])
def test_register_hook_that_calls_sys_exit_is_a_failure(fresh_manager, kind: str) -> None:
    def hook():
        sys.exit(0)

    fresh_manager.add_plugin(module_from_hooks("iso_exiter", **{f"uad_register_{kind}": hook}), name="iso_exiter",
                             source="entrypoint", distribution="uad-exiter", version="1.2")
    specs = list_components()  # used to end the interpreter
    assert "perlin" in {s.name for s in specs}
    failure = get_registry().failures()["iso_exiter"]
    assert failure.error == f"uad_register_{kind} failed: SystemExit: the plugin called sys.exit(0)"
    assert (failure.distribution, failure.version) == ("uad-exiter", "1.2")


def test_generator_hook_raising_generator_exit_is_a_failure(fresh_manager) -> None:
    def hook():
        yield SynthesizerSpec(name="iso_first", target=PERLIN_TARGET)
        raise GeneratorExit

    fresh_manager.add_plugin(module_from_hooks("iso_gen", uad_register_synthesizers=hook), name="iso_gen",
                             source="local", distribution="t", version="1")
    reg = get_registry()
    assert "GeneratorExit" in reg.failures()["iso_gen"].error
    assert "iso_first" not in {s.name for s in reg.list("synthesizer")}  # a failing hook contributes nothing
    assert "perlin" in {s.name for s in reg.list("synthesizer")}


def test_registering_a_plugin_whose_attributes_call_sys_exit_is_a_failure(fresh_manager) -> None:
    class Hostile:
        def __dir__(self):
            sys.exit(4)

    assert fresh_manager.add_plugin(Hostile(), name="iso_hostile", source="local", distribution="t",
                                    version="1") is False
    assert "called sys.exit(4)" in fresh_manager.failures["iso_hostile"].error
    assert fresh_manager.get_plugin("iso_hostile") is None
    assert "perlin" in {s.name for s in list_components("synthesizer")}


def test_component_whose_target_import_calls_sys_exit_is_a_load_error(fresh_manager, plugin_module) -> None:
    plugin_module("iso_exit_target", "import sys\nsys.exit(0)\n")
    fresh_manager.add_plugin(module_from_hooks("iso_tgt", uad_register_models=lambda: ModelSpec(
        name="iso_exit_model", target="iso_exit_target:Model")), name="iso_tgt", source="entrypoint",
        distribution="uad-tgt", version="2.0")
    with pytest.raises(ComponentLoadError) as err:
        create_model("plugin:iso_exit_model")
    text = str(err.value)
    assert "importing it called sys.exit(0)" in text and "iso_tgt (entrypoint, uad-tgt 2.0)" in text


def test_strict_mode_turns_sys_exit_into_a_plugin_load_error(plugin_module, monkeypatch) -> None:
    plugin_module("iso_exit_strict", "import sys\nsys.exit(0)\n")
    monkeypatch.setenv("UAD_PLUGINS_STRICT", "1")
    pm = UadPluginManager()
    with pytest.raises(PluginLoadError, match=r"sys\.exit\(0\)"):
        pm.load_entrypoints(entry_points("uad-exiter", "1.2", exiter="iso_exit_strict"))


def test_keyboard_interrupt_is_never_isolated(fresh_manager, plugin_module, tmp_path: Path) -> None:
    def hook():
        raise KeyboardInterrupt

    fresh_manager.add_plugin(module_from_hooks("iso_ctrl_c", uad_register_models=hook), name="iso_ctrl_c",
                             source="local", distribution="t", version="1")
    with pytest.raises(KeyboardInterrupt):
        get_registry().list()
    plugin_module("iso_ctrl_c_import", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        UadPluginManager().load_entrypoints(entry_points("uad-c", "1", c="iso_ctrl_c_import"))
    with pytest.raises(KeyboardInterrupt):
        UadPluginManager().load_builtins(["iso_ctrl_c_import"])
    file = tmp_path / "iso_ctrl_c_file.py"
    file.write_text("raise KeyboardInterrupt\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        UadPluginManager().load_plugin_file(file)


# ---------------------------------------------------------------------------------------------- item 11: clashes


def test_builtin_is_listed_first_whatever_pluggy_order(fresh_manager) -> None:
    # the rival registers after the built-ins (pluggy calls it first) and asks to be tried first
    rival = module_from_hooks("iso_rival")
    rival.uad_register_models = hookimpl(tryfirst=True)(
        lambda: ModelSpec(name="pbas", target=PERLIN_TARGET, summary="rival"))
    fresh_manager.add_plugin(rival, name="iso_rival", source="entrypoint", distribution="uad-rival", version="0.3")
    pbas = [s for s in list_components("model") if s.name == "pbas"]
    assert [(s.plugin, s.source) for s in pbas] == [("pbas", "builtin")]
    every = [s for s in get_registry().list("model", all_providers=True) if s.name == "pbas"]
    assert [s.plugin for s in every] == ["pbas", "iso_rival"]


def test_rank_is_source_then_load_order_not_registration_order() -> None:
    pm = UadPluginManager()
    for name, source in [("iso_local", "local"), ("iso_ep", "entrypoint")]:
        pm.add_plugin(module_from_hooks(name, uad_register_models=lambda: ModelSpec(
            name="pbas", target=PERLIN_TARGET)), name=name, source=source, distribution=f"d-{name}", version="1")
    pm.load_builtins(["uad_plugins.plugins.pbas.hooks"])  # the built-in registers last
    reg = Registry(pm)
    assert [s.plugin for s in reg.list("model", all_providers=True)] == ["pbas", "iso_ep", "iso_local"]
    assert [s.plugin for s in reg.conflicts()[("model", "pbas")]] == ["pbas", "iso_ep", "iso_local"]


def test_using_a_clashing_name_names_both_providers(fresh_manager) -> None:
    fresh_manager.add_plugin(module_from_hooks("iso_rival", uad_register_models=lambda: ModelSpec(
        name="pbas", target=PERLIN_TARGET)), name="iso_rival", source="entrypoint", distribution="uad-rival",
        version="0.3")
    with pytest.raises(ComponentConflictError) as err:
        create_model("plugin:pbas")
    text = str(err.value)
    assert "pbas (builtin, uad_plugins" in text and "iso_rival (entrypoint, uad-rival 0.3)" in text
    assert "UAD_DISABLE_PLUGINS=iso_rival" in text and "uad_plugins.plugins.pbas.model.Pbas" in text
    spec = next(s for s in get_registry().list("model") if s.name == "pbas")
    assert [p.plugin for p in get_registry().clashes_of(spec)["pbas"]] == ["pbas", "iso_rival"]


def test_alias_of_a_clashing_spec_resolves_to_its_own_spec() -> None:
    pm = UadPluginManager()
    pm.add_plugin(module_from_hooks("iso_rival", uad_register_models=lambda: ModelSpec(
        name="pbas", target=PERLIN_TARGET, aliases=("iso_rival_pbas",))), name="iso_rival", source="local",
        distribution="t", version="1")
    pm.load_builtins(["uad_plugins.plugins.pbas.hooks"])
    reg = Registry(pm)
    assert reg.get("model", "iso_rival_pbas").plugin == "iso_rival"  # not the built-in that won the listing
    with pytest.raises(ComponentConflictError):
        reg.get("model", "pbas")


def test_entry_point_named_like_a_builtin_is_refused_and_blamed(fresh_manager, plugin_module) -> None:
    plugin_module("iso_rival_hooks", RIVAL_PBAS)
    fresh_manager.load_entrypoints(entry_points("uad-rival", "0.3", pbas="iso_rival_hooks"))
    assert fresh_manager.records["pbas"].source == "builtin"
    assert "iso_rival_hooks" not in sys.modules  # refused before any of its code ran
    reg = get_registry()
    assert "pbas" not in reg.failures()  # the built-in keeps status ok
    failure = reg.failures()["pbas@uad-rival"]
    assert (failure.source, failure.distribution, failure.version) == ("entrypoint", "uad-rival", "0.3")
    assert failure.clashes_with == "pbas" and failure.entry_point == "pbas = iso_rival_hooks"
    assert "already taken by the builtin plugin 'pbas' (uad_plugins" in failure.summary
    assert "uad-rival 0.3" in failure.summary
    assert reg.get("model", "pbas").source == "builtin"


def test_second_entry_point_with_a_taken_name_is_blamed_on_its_own_package(plugin_module) -> None:
    plugin_module("iso_first", GOOD)
    plugin_module("iso_second", GOOD.replace("iso_good_synth", "iso_other_synth"))
    pm = UadPluginManager()
    pm.load_entrypoints([*entry_points("uad-first", "1.0", same="iso_first"),
                         *entry_points("uad-second", "2.0", same="iso_second")])
    assert pm.records["same"].distribution == "uad-first" and "same" not in pm.failures
    refused = pm.failures["same@uad-second"]
    assert refused.version == "2.0" and "entrypoint plugin 'same' (uad-first 1.0)" in refused.error


def test_broken_builtin_name_cannot_be_taken_over(plugin_module) -> None:
    plugin_module("iso_broken_builtin", "raise ImportError('broken')\n")
    plugin_module("iso_taker", GOOD)
    pm = UadPluginManager()
    pm.load_builtins(["iso_broken_builtin"])
    pm.load_entrypoints(entry_points("uad-taker", "1.0", iso_broken_builtin="iso_taker"))
    assert "iso_broken_builtin" not in pm.records
    assert pm.failures["iso_broken_builtin"].distribution == "uad_plugins"
    assert "which failed to load" in pm.failures["iso_broken_builtin@uad-taker"].error


def test_plugin_file_named_like_a_builtin_is_refused(fresh_manager, tmp_path: Path) -> None:
    file = tmp_path / "pbas.py"
    file.write_text("raise RuntimeError('must never run')\n", encoding="utf-8")
    assert fresh_manager.load_plugin_file(file) is False
    key = f"pbas@{file.resolve()}"
    assert fresh_manager.failures[key].clashes_with == "pbas"
    assert fresh_manager.failures["pbas"] is fresh_manager.failures[key]  # what `uad --plugin-file` looks up
    assert fresh_manager.failures.get("pbas") is None and "pbas" not in get_registry().failures()
    assert fresh_manager.records["pbas"].source == "builtin"


def test_failed_add_plugin_never_unregisters_the_holder(fresh_manager) -> None:
    impostor = module_from_hooks("perlin", uad_register_synthesizers=lambda: [])
    assert fresh_manager.add_plugin(impostor, name="perlin", source="builtin", distribution="uad_plugins",
                                    version="0") is False
    assert fresh_manager.get_plugin("perlin") is not impostor and fresh_manager.get_plugin("perlin") is not None
    assert get_registry().get("synthesizer", "perlin").plugin == "perlin"
    assert "perlin" not in get_registry().failures()


def test_loading_the_same_plugin_twice_is_a_no_op(tmp_path: Path, plugin_module) -> None:
    file = tmp_path / "iso_twice.py"
    file.write_text(GOOD, encoding="utf-8")
    pm = UadPluginManager()
    assert pm.load_plugin_file(file) and pm.load_plugin_file(file)
    plugin_module("iso_twice_ep", GOOD.replace("iso_good_synth", "iso_twice_synth"))
    eps = entry_points("uad-twice", "1", twice="iso_twice_ep")
    pm.load_entrypoints(eps)
    pm.load_entrypoints(eps)
    pm.load_builtins(["uad_plugins.plugins.perlin.hooks"])
    pm.load_builtins(["uad_plugins.plugins.perlin.hooks"])
    assert not pm.failures and {"iso_twice", "twice", "perlin"} <= set(pm.records)


def test_cli_rows_blame_the_refused_package(capsys, plugin_module) -> None:
    import json

    from uad_plugins.cli.main import main

    plugin_module("iso_rival_hooks2", RIVAL_PBAS)
    pm = UadPluginManager()
    pm.load_builtins()
    pm.load_entrypoints(entry_points("uad-rival", "0.3", pbas="iso_rival_hooks2"))
    with using_plugin_manager(pm):
        assert main(["plugins", "list", "--json"]) == 0
        rows = {r["plugin"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["pbas"]["status"] == "ok" and rows["pbas"]["distribution"] == "uad_plugins"
        refused = rows["pbas@uad-rival"]
        assert (refused["status"], refused["distribution"], refused["version"]) == ("error", "uad-rival", "0.3")
        assert "already taken by the builtin plugin 'pbas'" in refused["error"]
        assert main(["plugins", "show", "pbas"]) == 0
        out = capsys.readouterr().out
        assert "status:      ok" in out and "pbas = iso_rival_hooks2 (uad-rival 0.3)" in out
        assert "uad plugins show pbas@uad-rival" in out
        assert main(["plugins", "show", "pbas@uad-rival"]) == 0
        out = capsys.readouterr().out
        assert "status:      error" in out and "provided by: uad-rival 0.3" in out
