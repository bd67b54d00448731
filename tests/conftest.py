"""Shared fixtures: offline, 2 threads, a per-session cache, and fresh plugin managers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def _uad_main(argv):
    from uad_plugins.cli.main import main

    return main(argv)


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MVTEC_ROOT = SHARED / "data" / "mvtec_ad_256"
SHARED_WEIGHTS = SHARED / "weights" / "tf_efficientnet_lite0.safetensors"

# Never touch the network, keep caches inside the test session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    if "torch" in sys.modules or os.environ.get("UAD_TEST_THREADS_SET") != "1":
        try:
            import torch

            torch.set_num_threads(2)
        except ImportError:
            pass


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """UAD_CACHE_DIR for the whole session (the demo dataset is generated once), unless one is set."""
    if os.environ.get("UAD_CACHE_DIR"):
        return Path(os.environ["UAD_CACHE_DIR"])
    cache = tmp_path_factory.mktemp("uad_cache")
    os.environ["UAD_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture
def fresh_manager():
    """A new plugin manager with the built-ins only (no entry points), used by every lookup in the test."""
    from uad_plugins.manager import UadPluginManager, using_plugin_manager

    pm = UadPluginManager()
    pm.load_builtins()
    with using_plugin_manager(pm):
        yield pm


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a plugin module ``name.py`` with ``source`` into tmp_path and make it importable."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        created.append(name)
        return name

    yield write
    for name in created:
        sys.modules.pop(name, None)


# ---------------------------------------------------------------- CLI helpers

#: tiny PBAS settings: random weights, 64 px, small dimensions (seconds on 2 CPU cores)
TINY_PBAS = ["--model", "plugin:pbas", "--model.pretrained", "false", "--model.image_size", "64",
             "--model.pretrain_embed_dimension", "64", "--model.target_embed_dimension", "64",
             "--model.dsc_hidden", "32"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="session")
def import_tool():
    """``import_tool(name)``: a script of ``tools/`` imported as a module (``tools/`` is not a package)."""
    import importlib

    tools = str(REPO / "tools")

    def load(name: str):
        sys.path.insert(0, tools)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(tools)

    return load


@pytest.fixture(scope="session")
def tiny_pbas() -> list[str]:
    return list(TINY_PBAS)


@pytest.fixture(scope="session")
def quiet() -> list[str]:
    return list(QUIET)


@pytest.fixture
def uad(capsys: pytest.CaptureFixture[str]):
    """``code, out, err = uad("fit", ...)``."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = _uad_main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


#: Python source that makes importing torch, lightning, anomalib or torchvision fail in the process that runs it
BLOCK_TORCH = """\
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'lightning', 'anomalib', 'torchvision'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="session")
def block_torch() -> str:
    """Source to put first in a subprocess's script so that the torch stack cannot be imported there."""
    return BLOCK_TORCH


@pytest.fixture(scope="session")
def tiny_edge_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An FP32 bundle of a tiny PBAS (64 px, random weights, 1 epoch of 3 batches) for edge-runtime tests."""
    root = tmp_path_factory.mktemp("edge_bundle")
    assert _uad_main(["fit", *TINY_PBAS, *QUIET, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
                      "--heatmaps", "false", "--default_root_dir", str(root / "runs"),
                      "--data.category", "washer"]) == 0
    assert _uad_main(["export", "--ckpt_path", str(next((root / "runs").rglob("model.ckpt"))), "--output",
                      str(root / "bundle")]) == 0
    return root / "bundle"
