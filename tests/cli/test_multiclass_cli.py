"""`uad fit|test --data.categories ...`: unified (multi-class) training with per-category test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)

DEMO_CATEGORIES = {"weave", "washer", "tile"}
METRICS = {"image_AUROC", "pixel_AUROC", "image_F1Max", "pixel_F1Max", "pixel_AUPRO", "image_Precision", "image_Recall",
           "image_F1Score"}


def make_category_folders(root: Path, n_train: int = 8) -> Path:
    """Two tiny categories in the MVTec-like layout (train/good, test/good, test/<defect>, ground_truth/<defect>)."""
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[5:15, 5:15] = 255
    for k, category in enumerate(("alpha", "beta")):
        base = root / category
        files = [(f"train/good/{i:03d}.png", 100 + k + i) for i in range(n_train)]
        files += [(f"test/good/{i:03d}.png", 120 + k + i) for i in range(2)]
        files += [(f"test/dent/{i:03d}.png", 200 + k + i) for i in range(2)]
        for name, value in files:
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((40, 40, 3), value, dtype=np.uint8)).save(base / name)
        (base / "ground_truth" / "dent").mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(mask).save(base / "ground_truth" / "dent" / f"{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def unified_run(tmp_path_factory: pytest.TempPathFactory, tiny_pbas: list[str], quiet: list[str]):
    """One tiny PBAS run on all three demo categories (no --data), shared by the tests below."""
    from uad_plugins.cli.main import main

    root = tmp_path_factory.mktemp("runs")
    code = main(["fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                 "--default_root_dir", str(root), "--data.categories", "all"])
    assert code == 0
    run_dir = next(root.glob("pbas/UadDemo/all/v*"))
    return run_dir, str(run_dir / "weights" / "lightning" / "model.ckpt")


@pytest.mark.slow
def test_fit_all_demo_categories_reports_every_category_and_the_mean(unified_run, capsys) -> None:
    run_dir, ckpt = unified_run
    assert Path(ckpt).is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test_per_category"]) == DEMO_CATEGORIES
    for values in metrics["test_per_category"].values():
        assert set(values) == METRICS and all(v is None or 0.0 <= v <= 1.0 for v in values.values())
    mean = metrics["test_mean_over_categories"]
    assert set(mean) == METRICS
    expected = sum(v["image_AUROC"] for v in metrics["test_per_category"].values()) / 3
    assert mean["image_AUROC"] == pytest.approx(expected)
    assert set(metrics["test"]) == METRICS and metrics["test_data"]["category"] == "all"
    validation = metrics["validation"]
    assert validation["mode"] == "synthetic" and set(validation["per_category"]) == DEMO_CATEGORIES
    assert all(p["n_val_anomalous"] > 0 and p["n_val_normal"] > 0 for p in validation["per_category"].values())
    images = run_dir / "images"  # one heatmap folder per category: shared file names do not collide
    assert {p.name for p in images.iterdir() if p.is_dir()} == DEMO_CATEGORIES
    assert len(list(images.rglob("*.png"))) == 90  # 3 x (12 good + 18 defective) test images
    meta = torch.load(ckpt, map_location="cpu", weights_only=False)["uad_plugins"]
    assert meta["data"]["class_path"] == "uad_plugins.data.multiclass.UnifiedUadDemo"
    assert meta["data"]["init_args"]["categories"] == "all"


@pytest.mark.slow
def test_test_from_checkpoint_rebuilds_the_unified_data(unified_run, uad, quiet) -> None:
    run_dir, ckpt = unified_run
    before = json.loads((run_dir / "metrics.json").read_text())["test_per_category"]
    code, out, err = uad("test", "--ckpt_path", ckpt, *quiet)
    assert code == 0, err
    assert "per category" in out and all(c in out for c in DEMO_CATEGORIES) and "mean" in out
    assert json.loads((run_dir / "metrics.json").read_text())["test_per_category"] == before  # the fit's, kept
    record = max(run_dir.glob("test_*.json"))  # this test's own record
    after = json.loads(record.read_text())["test_per_category"]
    assert set(after) == DEMO_CATEGORIES
    for category in DEMO_CATEGORIES:
        assert after[category]["image_AUROC"] == pytest.approx(before[category]["image_AUROC"], abs=1e-6)


@pytest.mark.slow
def test_category_folders_fit(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    root = make_category_folders(tmp_path / "parts", n_train=8)
    code, out, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--trainer.limit_train_batches",
                         "1", "--default_root_dir", tmp_path / "runs", "--data", "Folder", "--data.root", root,
                         "--data.categories", "[alpha, beta]", "--data.num_workers", "0",
                         "--data.train_batch_size", "4", "--data.eval_batch_size", "4", "--heatmaps", "false")
    assert code == 0, err
    assert "alpha" in out and "beta" in out
    run_dir = next((tmp_path / "runs").glob("pbas/parts/alpha+beta/v*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test_per_category"]) == {"alpha", "beta"}
    assert set(metrics["validation"]["per_category"]) == {"alpha", "beta"}


def test_unsupported_datamodule_with_categories_is_a_config_error(uad, tiny_pbas) -> None:
    code, _out, err = uad("fit", *tiny_pbas, "--data", "Kolektor", "--data.categories", "all")
    assert code == 2
    assert "does not support categories" in err and "MVTecAD" in err


def test_unknown_demo_category_is_a_data_error(uad, tiny_pbas, tmp_path: Path) -> None:
    code, _out, err = uad("fit", *tiny_pbas, "--default_root_dir", tmp_path, "--data.categories", "[weave, wash]")
    assert code == 2
    assert "unknown category 'wash'" in err and "washer" in err
