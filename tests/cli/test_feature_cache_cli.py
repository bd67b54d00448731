"""`uad fit --feature_cache`: the counters land in metrics.json; a bad value is one error block (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


def _folder(root: Path) -> list[str]:
    """A tiny Folder dataset: 8 normal and 2 anomalous 64 px images."""
    rng = np.random.default_rng(0)
    for group, count in (("good", 8), ("bad", 2)):
        (root / group).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / group / f"{i}.png")
    return ["--data", "Folder", "--data.name", "mine", "--data.root", str(root), "--data.normal_dir", "good",
            "--data.abnormal_dir", "bad", "--data.num_workers", "0", "--data.train_batch_size", "4",
            "--data.eval_batch_size", "4"]


@pytest.mark.slow
def test_fit_with_a_memory_cache_records_its_hits(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "2", "--test", "false", "--heatmaps",
                         "false", "--default_root_dir", tmp_path / "runs", *_folder(tmp_path / "data"),
                         "--feature_cache", "memory", "--feature_cache_budget_mb", "64")
    assert code == 0, err
    metrics = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    stats = metrics["feature_cache"]
    assert stats["mode"] == "memory" and stats["budget_mb"] == 64 and not stats["budget_full"]
    # PBAS's centre pass computes each training image once; its two epochs read them all back
    assert stats["entries"] == stats["misses"] > 0 and stats["hits"] == 2 * stats["misses"]


@pytest.mark.parametrize(("option", "value", "needle"), [("--feature_cache", "ram", "must be one of memory, disk"),
                                                         ("--feature_cache_budget_mb", "0", "positive number")])
def test_bad_feature_cache_options_are_one_error_block(uad, tiny_pbas, quiet, tmp_path: Path, option: str,
                                                       value: str, needle: str) -> None:
    extra = [] if option == "--feature_cache" else ["--feature_cache", "disk"]
    code, _, err = uad("fit", *tiny_pbas, *quiet, "--default_root_dir", tmp_path / "runs", *extra, option, value)
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and needle in err
    assert not (tmp_path / "runs").exists()
