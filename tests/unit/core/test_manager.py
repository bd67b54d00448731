"""Plugin manager: load order, isolation of broken plugins, switches, local files."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from uad_plugins.errors import PluginLoadError
from uad_plugins.manager import UadPluginManager
from uad_plugins.plugins import BUILTIN_PLUGINS

GOOD = '''
from uad_plugins import SynthesizerSpec, hookimpl

@hookimpl
def uad_register_synthesizers():
    return SynthesizerSpec(name="good_synth", target="uad_plugins.plugins.perlin.synthesizer:PerlinSynthesizer",
                           summary="test")
'''
BROKEN = "raise ImportError('this plugin is broken on purpose')\n"
TYPO = '''
from uad_plugins import hookimpl

@hookimpl
def uad_register_model():
    return []
'''


def _ep(name: str, module: str) -> md.EntryPoint:
    return md.EntryPoint(name=name, value=module, group="uad_plugins")


def test_builtins_register_with_provenance() -> None:
    pm = UadPluginManager()
    pm.load_builtins()
    assert len(pm.records) == len(BUILTIN_PLUGINS)
    rec = pm.records["perlin"]
    assert rec.source == "builtin" and rec.distribution == "uad_plugins"


def test_broken_entry_point_is_isolated(plugin_module) -> None:
    plugin_module("plug_good", GOOD)
    plugin_module("plug_broken", BROKEN)
    pm = UadPluginManager()
    pm.load_entrypoints([_ep("broken", "plug_broken"), _ep("good", "plug_good")])
    assert "good" in pm.records and "broken" not in pm.records
    failure = pm.failures["broken"]
    assert "broken on purpose" in failure.error and "Traceback" in failure.traceback
    assert pm.get_plugin("broken") is None


def test_strict_mode_raises(plugin_module, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_module("plug_broken2", BROKEN)
    monkeypatch.setenv("UAD_PLUGINS_STRICT", "1")
    pm = UadPluginManager()
    with pytest.raises(PluginLoadError, match="broken on purpose"):
        pm.load_entrypoints([_ep("broken", "plug_broken2")])


def test_misspelled_hook_is_a_recorded_failure(plugin_module) -> None:
    plugin_module("plug_typo", TYPO)
    pm = UadPluginManager()
    pm.load_entrypoints([_ep("typo", "plug_typo")])
    assert "did you mean 'uad_register_models'" in pm.failures["typo"].error
    assert pm.get_plugin("typo") is None  # rolled back


def test_disable_and_allow_lists(plugin_module, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin_module("plug_good2", GOOD)
    monkeypatch.setenv("UAD_DISABLE_PLUGINS", "good,perlin")
    pm = UadPluginManager()
    pm.load_builtins()
    pm.load_entrypoints([_ep("good", "plug_good2")])
    assert "perlin" not in pm.records and "good" not in pm.records
    assert {"perlin", "good"} <= set(pm.disabled)
    monkeypatch.delenv("UAD_DISABLE_PLUGINS")
    monkeypatch.setenv("UAD_LOAD_PLUGINS", "")
    pm2 = UadPluginManager()
    pm2.load_entrypoints([_ep("good", "plug_good2")])
    assert "good" not in pm2.records


def test_plugin_file(tmp_path) -> None:
    file = tmp_path / "my_local_plugin.py"
    file.write_text(GOOD, encoding="utf-8")
    pm = UadPluginManager()
    assert pm.load_plugin_file(file)
    assert pm.records["my_local_plugin"].source == "local"
    assert not pm.load_plugin_file(tmp_path / "missing.py")
    assert "no such plugin file" in pm.failures["missing"].error


def test_generation_changes_on_registration(plugin_module) -> None:
    plugin_module("plug_good3", GOOD)
    pm = UadPluginManager()
    before = pm.generation
    pm.load_entrypoints([_ep("good", "plug_good3")])
    assert pm.generation > before


def test_trace_switch_prints_hook_calls(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from uad_plugins.registry import Registry

    monkeypatch.setenv("UAD_TRACE_PLUGINS", "1")
    pm = UadPluginManager()
    pm.load_builtins()
    Registry(pm).list()
    pm.hook.uad_register_synthesizers()
    assert "uad_register_synthesizers" in capsys.readouterr().err
