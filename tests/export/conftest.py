"""One tiny PBAS run and its FP32 bundle, shared by the export tests (fit and export once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_pbas: list[str], quiet: list[str]) -> Path:
    """model.ckpt of a tiny PBAS run on the demo data (1 epoch, 3 batches); tests never change it."""
    from uad_plugins.cli.main import main

    root = tmp_path_factory.mktemp("export_runs")
    code = main(["fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
                 "--heatmaps", "false", "--default_root_dir", str(root), "--data.category", "washer"])
    assert code == 0
    return next(root.rglob("model.ckpt"))


@pytest.fixture(scope="session")
def bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Its FP32 bundle; tests that change a bundle work on a copy."""
    from uad_plugins.cli.main import main

    out = tmp_path_factory.mktemp("bundles") / "fp32"
    assert main(["export", "--ckpt_path", str(checkpoint), "--output", str(out)]) == 0
    return out
