"""pytest fixtures for uad plugin authors (registered through the ``pytest11`` entry point).

pytest imports this module in every project where uad_plugins is installed, before coverage starts, so it
imports nothing heavy: torch and anomalib are imported inside the fixtures that need them.

Fixtures:
    uad_register_plugin  register an in-memory plugin (a module or object with ``uad_*`` hooks) for one test
    uad_synthetic_data   a tiny MVTec-layout dataset under tmp_path (category 'synthetic')
    uad_model_contract   ``uad_model_contract("plugin:name")`` runs the model contract in tmp_path
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def uad_register_plugin() -> Iterator[Callable[..., Any]]:
    """Register plugins for the duration of one test; they are removed afterwards."""
    from uad_plugins.manager import get_plugin_manager

    pm = get_plugin_manager()
    added: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        plugin_name = name or getattr(plugin, "__name__", type(plugin).__name__)
        ok = pm.add_plugin(plugin, name=plugin_name, source="local", distribution="test", version="0")
        if not ok:
            raise RuntimeError(f"plugin {plugin_name} failed to register: {pm.failures[plugin_name].error}")
        added.append(plugin_name)
        return plugin_name

    yield register
    for plugin_name in added:
        if pm.get_plugin(plugin_name) is not None:
            pm.unregister(name=plugin_name)
        pm.records.pop(plugin_name, None)


@pytest.fixture
def uad_synthetic_data(tmp_path: Path) -> Path:
    """Root of a tiny MVTec-layout dataset with the category ``synthetic``."""
    from uad_plugins.testing.contract import make_synthetic_image_dataset

    return make_synthetic_image_dataset(tmp_path / "uad_synthetic")


@pytest.fixture
def uad_model_contract(tmp_path: Path) -> Callable[..., Any]:
    """Run the model contract: ``report = uad_model_contract("plugin:example")``."""
    from uad_plugins.testing.contract import run_model_contract

    def run(reference: str, **kwargs: Any):
        return run_model_contract(reference, tmp_path / "contract", **kwargs)

    return run


@pytest.fixture
def uad_synthesizer_contract() -> Callable[..., Any]:
    """Run the synthesizer contract: ``uad_synthesizer_contract("plugin:scratch")``."""
    from uad_plugins.testing.contract import run_synthesizer_contract

    return run_synthesizer_contract


@pytest.fixture
def uad_metric_contract() -> Callable[..., Any]:
    """Run the image metric contract: ``value = uad_metric_contract("plugin:image_tpr_at_fpr")``."""
    from uad_plugins.testing.contract import run_metric_contract

    return run_metric_contract
