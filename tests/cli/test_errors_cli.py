"""Every bad input from the CLI is one clear error block with exit status 2: never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def _png(path: Path, size: int = 64, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def _folder(root: Path, n_good: int = 6, n_bad: int = 2, mode: str = "RGB") -> list[str]:
    for i in range(n_good):
        _png(root / "good" / f"{i}.png", mode=mode, seed=i)
    for i in range(n_bad):
        _png(root / "bad" / f"{i}.png", seed=100 + i)
    return ["--data", "Folder", "--data.name", "mine", "--data.root", str(root), "--data.normal_dir", "good",
            "--data.abnormal_dir", "bad", "--data.num_workers", "0", "--data.train_batch_size", "2",
            "--data.eval_batch_size", "2"]


def _fit(uad, tiny_pbas, quiet, tmp_path: Path, *data: str, extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    return uad("fit", *tiny_pbas, *quiet, "--trainer.max_epochs", "1", "--heatmaps", "false",
               "--default_root_dir", tmp_path / "runs", *data, *extra)


def _assert_clean_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_own_folder_with_greyscale_images_trains(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    code, out, err = _fit(uad, tiny_pbas, quiet, tmp_path, *_folder(tmp_path / "data", mode="L"))
    assert code == 0, err
    assert "image_AUROC" in out
    import json

    metrics = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert metrics["test_data"] == {"category": "mine", "datamodule": "Folder"}  # was "" for a Folder dataset


def test_corrupt_image_in_dataset(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    (tmp_path / "data" / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    code, _, err = _fit(uad, tiny_pbas, quiet, tmp_path, *data)
    _assert_clean_error(code, err, "broken.png")


def test_tiny_image_in_dataset(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    _png(tmp_path / "data" / "good" / "tiny.png", size=8)
    code, _, err = _fit(uad, tiny_pbas, quiet, tmp_path, *data)
    _assert_clean_error(code, err, "tiny.png")


def test_empty_dataset_folder(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    (tmp_path / "data" / "good").mkdir(parents=True)
    code, _, err = _fit(uad, tiny_pbas, quiet, tmp_path, "--data", "Folder", "--data.name", "x", "--data.root",
                        str(tmp_path / "data"), "--data.normal_dir", "good")
    _assert_clean_error(code, err, "good")


def test_missing_mvtec_folder_is_not_downloaded(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    code, _, err = _fit(uad, tiny_pbas, quiet, tmp_path, "--data", "MVTecAD", "--data.root",
                        str(tmp_path / "nowhere"), "--data.category", "bottle")
    _assert_clean_error(code, err, "nowhere", "never downloads")


def test_missing_weights_file(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    code, _, err = _fit(uad, tiny_pbas, quiet, tmp_path, extra=("--model.pretrained", str(tmp_path / "w.pth")))
    _assert_clean_error(code, err, "w.pth")


def test_bad_model_setting(uad, tiny_pbas, quiet, tmp_path: Path) -> None:
    code, _, err = _fit(uad, tiny_pbas, quiet, tmp_path, extra=("--model.noise_scale", "-1"))
    _assert_clean_error(code, err, "noise_scale")


def test_checkpoint_errors(uad, quiet, tmp_path: Path) -> None:
    code, _, err = uad("test", *quiet)
    _assert_clean_error(code, err, "--ckpt_path")
    code, _, err = uad("test", "--ckpt_path", tmp_path / "missing.ckpt", *quiet)
    _assert_clean_error(code, err, "checkpoint not found")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    code, _, err = uad("test", "--ckpt_path", garbage, *quiet)
    _assert_clean_error(code, err, "cannot be read")


def test_predict_on_a_folder_without_images(uad, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.ckpt").write_bytes(b"x")
    code, _, err = uad("predict", "--ckpt_path", tmp_path / "x.ckpt", "--data_path", tmp_path / "empty")
    assert code == 2 and "Traceback" not in err
