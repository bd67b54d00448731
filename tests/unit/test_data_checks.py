"""Input checks: unreadable, odd-sized and mismatched files give DataErrors naming the file; nothing downloads."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from uad_plugins.data.checks import (
    MIN_SIDE,
    check_datamodule,
    check_dataset_samples,
    check_image_file,
    prepare_datamodule,
    read_rgb_image,
)
from uad_plugins.errors import ConfigError, DataError

torch.set_num_threads(2)


def _rgb(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """Write a random RGB PNG of ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _mask(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[5:15, 5:15] = 255
    Image.fromarray(mask).save(path)
    return path


def _mvtec(root: Path, *, n_train: int = 3, mask_size: tuple[int, int] = (64, 48), train: bool = True) -> Path:
    """A tiny MVTec-layout category ``root/thing``."""
    base = root / "thing"
    if train:
        for i in range(n_train):
            _rgb(base / "train" / "good" / f"{i:03d}.png", seed=i)
    _rgb(base / "test" / "good" / "000.png", seed=10)
    _rgb(base / "test" / "bad" / "000.png", seed=11)
    _mask(base / "ground_truth" / "bad" / "000_mask.png", mask_size)
    return root


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Any attempt to download or open a connection fails the test; caches go to tmp_path."""
    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "cache"))
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args))
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("anomalib.data.datamodules.image.mvtecad.download_and_extract", refuse)
    return attempts


# ------------------------------------------------------------------------------------------------ single files
def test_corrupt_png_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a PNG at all" * 10)
    for call in (check_image_file, read_rgb_image):
        with pytest.raises(DataError) as info:
            call(bad)
        message = str(info.value)
        assert str(bad) in message and "cannot be read as an image" in message
        assert "remove it or replace it" in message


def test_truncated_png_is_rejected(tmp_path: Path) -> None:
    good = _rgb(tmp_path / "whole.png", (128, 128))
    data = good.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    assert check_image_file(good) == (128, 128)
    with pytest.raises(DataError, match=r"cut\.png"):
        check_image_file(cut)
    with pytest.raises(DataError, match=r"cut\.png"):
        read_rgb_image(cut)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        check_image_file(tmp_path / "nope.png")
    with pytest.raises(DataError, match=r"nope\.png"):
        read_rgb_image(tmp_path / "nope.png")


def test_greyscale_png_is_accepted_and_converted(tmp_path: Path) -> None:
    grey = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 251
    path = tmp_path / "grey.png"
    Image.fromarray(grey.astype(np.uint8), mode="L").save(path)
    assert check_image_file(path) == (64, 48)
    rgb = read_rgb_image(path)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(rgb[..., channel], grey)


def test_sixteen_bit_palette_and_rgba_are_converted(tmp_path: Path) -> None:
    deep = (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    rgb = read_rgb_image(tmp_path / "deep.png")
    assert np.array_equal(rgb[..., 1], np.rint(deep / 257.0).astype(np.uint8))
    assert rgb[..., 0].max() < 255 and rgb[..., 0].min() == 0  # scaled, not clipped to white

    pixels = np.random.default_rng(3).integers(0, 256, (40, 50, 4), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "alpha.png")
    assert np.array_equal(read_rgb_image(tmp_path / "alpha.png"), pixels[..., :3])

    palette = Image.fromarray(pixels[..., :3]).convert("P")
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_rgb_image(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))


def test_tiny_image_is_odd_sized(tmp_path: Path) -> None:
    tiny = _rgb(tmp_path / "tiny.png", (MIN_SIDE - 1, 100))
    for call in (check_image_file, read_rgb_image):
        with pytest.raises(DataError) as info:
            call(tiny)
        assert "odd-sized" in str(info.value) and str(tiny) in str(info.value) and "31x100" in str(info.value)
    assert check_image_file(_rgb(tmp_path / "ok.png", (MIN_SIDE, MIN_SIDE))) == (MIN_SIDE, MIN_SIDE)


# ------------------------------------------------------------------------------------------------ samples
def _samples(rows: list[tuple[Path, Path | None]]) -> pd.DataFrame:
    return pd.DataFrame({
        "image_path": [str(i) for i, _ in rows],
        "label_index": [0 if m is None else 1 for _, m in rows],
        "mask_path": [None if m is None else str(m) for _, m in rows],
        "split": ["test"] * len(rows),
    })


def test_mask_with_wrong_size(tmp_path: Path) -> None:
    image = _rgb(tmp_path / "img" / "000.png", (64, 48))
    mask = _mask(tmp_path / "gt" / "000_mask.png", (40, 40))
    ok_image, ok_mask = _rgb(tmp_path / "img" / "001.png", (64, 48)), _mask(tmp_path / "gt" / "001_mask.png")
    with pytest.raises(DataError) as info:
        check_dataset_samples(_samples([(image, mask), (ok_image, ok_mask)]), split_name="test",
                              dataset_root=str(tmp_path))
    message = str(info.value)
    assert "1 problem(s)" in message
    assert str(mask) in message and str(image) in message and "40x40" in message and "64x48" in message
    assert str(ok_mask) not in message
    check_dataset_samples(_samples([(ok_image, ok_mask)]), split_name="test", dataset_root=None)


def test_missing_and_corrupt_masks(tmp_path: Path) -> None:
    image = _rgb(tmp_path / "a.png")
    broken = tmp_path / "a_mask.png"
    broken.write_bytes(b"\x89PNG\r\n garbage")
    with pytest.raises(DataError, match=r"a_mask\.png"):
        check_dataset_samples(_samples([(image, broken)]), split_name="test", dataset_root=None)
    with pytest.raises(DataError, match="does not exist"):
        check_dataset_samples(_samples([(image, tmp_path / "gone_mask.png")]), split_name="test", dataset_root=None)


def test_all_problems_collected(tmp_path: Path) -> None:
    rows = []
    for i in range(13):
        bad = tmp_path / f"bad_{i:02d}.png"
        bad.write_bytes(b"garbage")
        rows.append((bad, None))
    rows.append((_rgb(tmp_path / "tiny.png", (8, 8)), None))
    rows.append((_rgb(tmp_path / "fine.png"), None))
    with pytest.raises(DataError) as info:
        check_dataset_samples(_samples(rows), split_name="train", dataset_root="/data/x")
    message = str(info.value)
    assert "14 problem(s) in 15 sample(s)" in message and "... and 4 more" in message
    assert "train images in /data/x" in message
    assert message.count("\n  - ") == 10
    assert "bad_00.png" in message and "fine.png" not in message


def test_sixteen_bit_images_are_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.fromarray(np.full((40, 40), 30000, np.uint16)).save(tmp_path / "deep.png")
    with caplog.at_level("WARNING", logger="uad_plugins.data.checks"):
        check_dataset_samples(_samples([(tmp_path / "deep.png", None)]), split_name="train", dataset_root=None)
    assert "16-bit" in caplog.text and "deep.png" in caplog.text


# ------------------------------------------------------------------------------------------------ datamodules
def test_prepare_mvtec_layout_ok(tmp_path: Path, _no_network: list[str]) -> None:
    from anomalib.data import MVTecAD

    dm = MVTecAD(root=_mvtec(tmp_path / "data"), category="thing", num_workers=0)
    assert prepare_datamodule(dm) == {"train": 3, "val": 2, "test": 2}
    assert dm._is_setup is True  # set up with a TrainerFn: the Trainer will not redo the splits
    assert check_datamodule(dm) == {"train": 3, "val": 2, "test": 2}
    assert _no_network == []


def test_prepare_mvtec_wrong_mask_size(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD

    dm = MVTecAD(root=_mvtec(tmp_path / "data", mask_size=(32, 32)), category="thing", num_workers=0)
    with pytest.raises(DataError) as info:
        prepare_datamodule(dm)
    assert "000_mask.png is 32x32 px" in str(info.value) and "64x48" in str(info.value)
    assert "Checking the test images" in str(info.value)


def test_missing_mvtec_category_never_downloads(tmp_path: Path, _no_network: list[str]) -> None:
    from anomalib.data import MVTecAD

    dm = MVTecAD(root=tmp_path / "nowhere", category="bottle", num_workers=0)
    with pytest.raises(DataError) as info:
        prepare_datamodule(dm)
    message = str(info.value)
    assert f"dataset not found at {tmp_path / 'nowhere' / 'bottle'}" in message
    assert "never downloads" in message and "--data.root" in message
    assert _no_network == []
    assert not (tmp_path / "nowhere").exists()


def test_no_training_images(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD

    dm = MVTecAD(root=_mvtec(tmp_path / "data", train=False), category="thing", num_workers=0)
    with pytest.raises(DataError) as info:
        prepare_datamodule(dm)
    message = str(info.value)
    assert f"no training images found in {tmp_path / 'data' / 'thing'}" in message
    assert "train/good" in message


def test_layout_error_becomes_data_error(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD

    root = _mvtec(tmp_path / "data")
    (root / "thing" / "ground_truth" / "bad" / "000_mask.png").rename(
        root / "thing" / "ground_truth" / "bad" / "999_mask.png")
    dm = MVTecAD(root=root, category="thing", num_workers=0)
    with pytest.raises(DataError) as info:
        prepare_datamodule(dm)
    assert "Mismatch between anomalous images and ground truth masks" in str(info.value)
    assert "Expected layout" in str(info.value)


def test_empty_folder_normal_dir(tmp_path: Path) -> None:
    from anomalib.data import Folder

    (tmp_path / "ds" / "good").mkdir(parents=True)
    (tmp_path / "ds" / "good" / "notes.txt").write_text("no images here")
    dm = Folder(name="mine", root=tmp_path / "ds", normal_dir="good", num_workers=0)
    with pytest.raises(DataError) as info:
        prepare_datamodule(dm)
    message = str(info.value)
    assert f"normal_dir folder {tmp_path / 'ds' / 'good'} is empty" in message and ".png" in message


def test_missing_folder_normal_dir(tmp_path: Path) -> None:
    from anomalib.data import Folder

    dm = Folder(name="mine", root=tmp_path, normal_dir="absent", num_workers=0)
    with pytest.raises(DataError, match="does not exist"):
        prepare_datamodule(dm)


def _good_and_bad_folder(root: Path) -> Any:
    """A Folder dataset of 4 normal and 2 anomalous PNGs (no validation split)."""
    from anomalib.data import Folder

    for i in range(4):
        _rgb(root / "good" / f"{i}.png", seed=i)
    for i in range(2):
        _rgb(root / "bad" / f"{i}.png", seed=10 + i)
    return Folder(name="mine", root=root, normal_dir="good", abnormal_dir="bad", num_workers=0, seed=0,
                  val_split_mode="none")


def test_folder_ok_and_corrupt_file_reported(tmp_path: Path) -> None:
    from anomalib.data import Folder

    counts = prepare_datamodule(_good_and_bad_folder(tmp_path))
    assert counts["train"] + counts["test"] == 6 and counts["train"] >= 1

    (tmp_path / "good" / "3.png").write_bytes(b"broken")
    dm = Folder(name="mine", root=tmp_path, normal_dir="good", abnormal_dir="bad", num_workers=0, seed=0)
    with pytest.raises(DataError, match=r"3\.png cannot be read as an image"):
        prepare_datamodule(dm)


def test_progress_line_names_the_whole_folder_dataset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The check's log line counts every split and names the dataset root, not only the normal directory."""
    dm = _good_and_bad_folder(tmp_path)
    with caplog.at_level("INFO", logger="uad_plugins.data.checks"):
        counts = prepare_datamodule(dm)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Checking "))
    assert f"Checking 6 image(s) (train {counts['train']}, test {counts['test']}) of {tmp_path} (" in line


def test_unknown_stage(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD

    dm = MVTecAD(root=_mvtec(tmp_path / "data"), category="thing", num_workers=0)
    with pytest.raises(ConfigError, match="unknown stage"):
        prepare_datamodule(dm, stage="bake")


def _jpeg(path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


@pytest.mark.parametrize(("maker", "name"), [(_rgb, "img.png"), (_jpeg, "img.jpg")], ids=["png", "jpeg"])
def test_header_check_still_finds_cut_off_files(tmp_path: Path, maker, name: str) -> None:
    """The default check reads headers only, but a file missing its end marker is decoded and named (issue 12)."""
    path = maker(tmp_path / name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match="img"):
        check_image_file(path)  # header is the default
    with pytest.raises(DataError, match="img"):
        check_image_file(path, image_check="full")


def test_header_check_does_not_decode_whole_files(tmp_path: Path, monkeypatch) -> None:
    """Damage inside a file with an intact header and end marker is found only by the full check."""
    path = _jpeg(tmp_path / "img.jpg", size=(256, 256))
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 400] = b"\xff\xd8" * 200  # start-of-image markers inside the scan
    path.write_bytes(bytes(data))
    decoded: list[int] = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or original(self))
    assert check_image_file(path) == (256, 256)
    assert not decoded
    with pytest.raises(DataError, match=r"img\.jpg"):
        check_image_file(path, image_check="full")


def test_unknown_image_check_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image_check"):
        check_image_file(_rgb(tmp_path / "a.png"), image_check="fast")
