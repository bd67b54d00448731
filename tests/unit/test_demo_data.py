"""The embedded demo dataset: deterministic, MVTec layout, exact masks, atomic caching."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uad_plugins.data import demo
from uad_plugins.data.checks import prepare_datamodule
from uad_plugins.data.demo import (
    DEMO_CATEGORIES,
    DEMO_DEFECTS,
    DEMO_VERSION,
    N_PER_DEFECT,
    N_TEST_GOOD,
    N_TRAIN,
    UadDemo,
    default_demo_root,
    ensure_demo_dataset,
    generate_demo_dataset,
    render_demo_image,
)
from uad_plugins.errors import DataError

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset generated once through the cache (UAD_CACHE_DIR points into a temp folder)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UAD_CACHE_DIR", str(cache))
        start = time.perf_counter()
        root = ensure_demo_dataset()
        print(f"demo generation: {time.perf_counter() - start:.2f} s")
    assert root == cache / "demo" / "v1"
    return root


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def test_default_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "c"))
    assert default_demo_root() == tmp_path / "c" / "demo" / "v1"
    monkeypatch.delenv("UAD_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_demo_root() == tmp_path / "home" / ".cache" / "uad_plugins" / "demo" / "v1"


def test_layout_and_counts(demo_root: Path) -> None:
    assert (demo_root / ".complete").read_text().strip() == DEMO_VERSION
    assert sorted(p.name for p in demo_root.iterdir() if p.is_dir()) == sorted(DEMO_CATEGORIES)
    for category in DEMO_CATEGORIES:
        base = demo_root / category
        assert len(list((base / "train" / "good").glob("*.png"))) == N_TRAIN
        assert len(list((base / "test" / "good").glob("*.png"))) == N_TEST_GOOD
        assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *DEMO_DEFECTS[category]])
        for defect in DEMO_DEFECTS[category]:
            images = sorted((base / "test" / defect).glob("*.png"))
            masks = sorted((base / "ground_truth" / defect).glob("*.png"))
            assert len(images) == len(masks) == N_PER_DEFECT
            assert [m.name for m in masks] == [f"{i.stem}_mask.png" for i in images]


def test_masks_non_empty_binary_and_image_sized(demo_root: Path) -> None:
    for category in DEMO_CATEGORIES:
        for defect in DEMO_DEFECTS[category]:
            for image_path in sorted((demo_root / category / "test" / defect).glob("*.png")):
                image = _png(image_path)
                mask = _png(demo_root / category / "ground_truth" / defect / f"{image_path.stem}_mask.png")
                assert image.shape == (256, 256, 3) and image.dtype == np.uint8
                assert mask.shape == (256, 256)
                assert set(np.unique(mask).tolist()) == {0, 255}
                assert (mask > 0).sum() >= 30


def test_defects_change_exactly_the_masked_pixels() -> None:
    for category in DEMO_CATEGORIES:
        for defect in DEMO_DEFECTS[category]:
            for index in (0, 1):
                clean, image, mask = demo._draw(category, defect, index)
                assert mask is not None and mask.sum() >= 30
                changed = np.any(clean != image, axis=-1)
                assert np.array_equal(changed, mask), (category, defect, index)
                again, again_mask = render_demo_image(category, defect, index)
                assert np.array_equal(again, image) and np.array_equal(again_mask, mask)


def test_normal_images_vary(demo_root: Path) -> None:
    for category in DEMO_CATEGORIES:
        a = _png(demo_root / category / "train" / "good" / "000.png").astype(float)
        b = _png(demo_root / category / "train" / "good" / "001.png").astype(float)
        assert np.abs(a - b).mean() > 5.0, category
        assert a.std() > 5.0


def test_generation_is_deterministic(demo_root: Path, tmp_path: Path) -> None:
    other = generate_demo_dataset(tmp_path / "again", categories=("washer",))
    files = sorted(p.relative_to(demo_root) for p in (demo_root / "washer").rglob("*.png"))
    again = sorted(p.relative_to(other) for p in (other / "washer").rglob("*.png"))
    assert files == again and len(files) == N_TRAIN + N_TEST_GOOD + 2 * 3 * N_PER_DEFECT
    for rel in files:
        assert np.array_equal(_png(demo_root / rel), _png(other / rel)), rel
        assert (demo_root / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_mvtecad_parses_the_demo(demo_root: Path) -> None:
    from anomalib.data import MVTecAD

    for category in DEMO_CATEGORIES:
        dm = MVTecAD(root=demo_root, category=category, num_workers=0)
        dm.setup()
        train, test = dm.train_data.samples, dm.test_data.samples
        assert len(train) == N_TRAIN and set(train.label_index) == {0}
        assert len(test) == N_TEST_GOOD + 3 * N_PER_DEFECT
        assert (test.label_index == 1).sum() == 3 * N_PER_DEFECT
        abnormal = test[test.label_index == 1]
        assert all(Path(p).is_file() for p in abnormal.mask_path)
        assert all(Path(i).stem in Path(m).stem for i, m in zip(abnormal.image_path, abnormal.mask_path))
        assert dm.test_data.task.value == "segmentation"
        item = dm.test_data[int(np.flatnonzero(test.label_index.to_numpy() == 1)[0])]
        assert item.image.shape == (3, 256, 256) and int(item.gt_mask.sum()) >= 30


def test_cache_is_reused_and_leaves_no_temp_dirs(demo_root: Path) -> None:
    before = (demo_root / "weave" / "train" / "good" / "000.png").stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_demo_dataset(demo_root) == demo_root
    assert time.perf_counter() - start < 1.0
    assert (demo_root / "weave" / "train" / "good" / "000.png").stat().st_mtime_ns == before
    assert [p.name for p in demo_root.parent.iterdir()] == ["v1"]


def _fake_generate(target: str | Path, categories: tuple[str, ...] = DEMO_CATEGORIES) -> Path:
    (Path(target) / "weave").mkdir(parents=True)
    (Path(target) / "weave" / "mine.txt").write_text("mine")
    return Path(target)


def test_lost_race_uses_the_other_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "demo" / "v1"

    def racing(target: str | Path, categories: tuple[str, ...] = DEMO_CATEGORIES) -> Path:
        (root / "weave").mkdir(parents=True)  # another process finishes first
        (root / "weave" / "theirs.txt").write_text("theirs")
        (root / ".complete").write_text(DEMO_VERSION + "\n")
        return _fake_generate(target)

    monkeypatch.setattr(demo, "generate_demo_dataset", racing)
    assert ensure_demo_dataset(root) == root
    assert (root / "weave" / "theirs.txt").is_file() and not (root / "weave" / "mine.txt").exists()
    assert [p.name for p in root.parent.iterdir()] == ["v1"]


def test_failed_generation_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(target: str | Path, categories: tuple[str, ...] = DEMO_CATEGORIES) -> Path:
        _fake_generate(target)
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "generate_demo_dataset", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_demo_dataset(tmp_path / "demo" / "v1")
    assert list((tmp_path / "demo").iterdir()) == []


def test_marker_written_last_and_rename_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(demo, "generate_demo_dataset", _fake_generate)
    root = ensure_demo_dataset(tmp_path / "d")
    assert (root / ".complete").read_text().strip() == DEMO_VERSION
    assert (root / "weave" / "mine.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_stale_temp_dirs_are_swept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stale, fresh = tmp_path / ".v1.tmp-dead", tmp_path / ".v1.tmp-busy"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    monkeypatch.setattr(demo, "generate_demo_dataset", _fake_generate)
    ensure_demo_dataset(tmp_path / "v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".v1.tmp-busy", "v1"]


def test_incomplete_folder_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "v1"
    (root / "weave").mkdir(parents=True)
    with pytest.raises(DataError, match="not a complete demo dataset") as info:
        ensure_demo_dataset(root)
    assert str(root) in str(info.value) and "Delete the folder" in str(info.value)


def test_uad_demo_datamodule(demo_root: Path) -> None:
    dm = UadDemo(root=demo_root, category="tile")
    assert dm.name == "UadDemo" and dm.category == "tile" and dm.root == demo_root
    assert (dm.train_batch_size, dm.eval_batch_size, dm.num_workers, dm.seed) == (8, 8, 0, 0)
    counts = prepare_datamodule(dm)
    assert counts == {"train": N_TRAIN, "val": N_TEST_GOOD + 3 * N_PER_DEFECT, "test": N_TEST_GOOD + 3 * N_PER_DEFECT}
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch.image.shape) == (8, 3, 256, 256)


def test_uad_demo_passes_mvtec_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path))
    dm = UadDemo(category="washer", val_split_mode="from_test", val_split_ratio=0.3)
    assert dm.root == tmp_path / "demo" / "v1"
    assert dm.val_split_mode.value == "from_test" and dm.val_split_ratio == 0.3
    assert not (tmp_path / "demo").exists()  # constructing generates nothing


def test_uad_demo_unknown_category() -> None:
    with pytest.raises(DataError) as info:
        UadDemo(category="tiles")
    message = str(info.value)
    assert "'tiles'" in message and "did you mean 'tile'" in message
    assert all(c in message for c in DEMO_CATEGORIES)
