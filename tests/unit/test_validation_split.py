"""Honest validation: a seeded synthetic split of held-back training normals, never the test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uad_plugins.data.checks import prepare_datamodule
from uad_plugins.data.validation import apply_synthetic_validation, needs_honest_validation
from uad_plugins.errors import ConfigError, DataError
from uad_plugins.plugins.perlin.synthesizer import PerlinSynthesizer
from uad_plugins.synth.base import Synthesizer

torch.set_num_threads(2)

N_TRAIN = 12


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    stripes = 0.5 + 0.5 * np.sin(xx / rng.uniform(2, 4) + yy / rng.uniform(3, 6))
    base = stripes[..., None] * rng.uniform(0.4, 0.9, 3) + rng.normal(0, 0.05, (64, 64, 3))
    return (np.clip(base, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small MVTec-layout category ``thing``: 12 train normals, 2 test normals, 2 test anomalies."""
    monkeypatch.setenv("UAD_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    base = root / "thing"
    for folder in ("train/good", "test/good", "test/bad", "ground_truth/bad"):
        (base / folder).mkdir(parents=True)
    for i in range(N_TRAIN):
        Image.fromarray(_texture(i)).save(base / "train" / "good" / f"{i:03d}.png")
    for i in range(2):
        Image.fromarray(_texture(100 + i)).save(base / "test" / "good" / f"{i:03d}.png")
        Image.fromarray(_texture(200 + i)).save(base / "test" / "bad" / f"{i:03d}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[10:20, 10:20] = 255
        Image.fromarray(mask).save(base / "ground_truth" / "bad" / f"{i:03d}_mask.png")
    return root


def _datamodule(root: Path, **kwargs: object) -> object:
    from anomalib.data import MVTecAD

    dm = MVTecAD(root=root, category="thing", num_workers=0, seed=0, **kwargs)
    prepare_datamodule(dm)
    return dm


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_split_shapes_and_labels(data_root: Path, tmp_path: Path) -> None:
    dm = _datamodule(data_root)
    test_paths = set(dm.test_data.samples.image_path)
    train_paths = set(dm.train_data.samples.image_path)
    info = apply_synthetic_validation(dm, PerlinSynthesizer(), ratio=0.25, seed=7, output_dir=tmp_path / "val")
    assert info == {"mode": "synthetic", "synthesizer": "PerlinSynthesizer", "ratio": 0.25, "seed": 7,
                    "n_train": N_TRAIN - 3, "n_val_normal": 1, "n_val_anomalous": 2, "dir": str(tmp_path / "val")}
    val = dm.val_data.samples
    assert len(dm.train_data) == N_TRAIN - 3 and len(val) == 3
    assert type(dm.val_data) is type(dm.train_data)
    assert sorted(val.label_index.tolist()) == [0, 1, 1]
    assert set(val.split) == {"val"} and dm.val_data.task.value == "segmentation"
    assert set(val[val.label_index == 1].label) == {"abnormal"}
    # nothing comes from the test set; held-back normals left the training set
    kept = set(dm.train_data.samples.image_path)
    normals = set(val[val.label_index == 0].image_path)
    assert not (set(val.image_path) & test_paths) and not (kept & normals)
    assert normals <= train_paths and len(kept | normals) == N_TRAIN - 2
    assert len(dm.test_data) == 4
    for row in val[val.label_index == 1].itertuples():
        image, mask = np.asarray(Image.open(row.image_path)), np.asarray(Image.open(row.mask_path))
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert set(np.unique(mask).tolist()) == {0, 255}
        assert Path(row.image_path).parent == tmp_path / "val" / "images"
        assert Path(row.mask_path).parent == tmp_path / "val" / "masks"
    for i in range(len(dm.val_data)):
        item = dm.val_data[i]
        assert item.image.shape == (3, 64, 64)
        assert (int(item.gt_mask.sum()) > 0) == bool(item.gt_label)
    assert not needs_honest_validation(dm)
    assert dm.uad_validation == info


def test_split_is_deterministic(data_root: Path, tmp_path: Path) -> None:
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        dm = _datamodule(data_root)
        apply_synthetic_validation(dm, PerlinSynthesizer(), ratio=0.5, seed=seed, output_dir=tmp_path / name)
        val = dm.val_data.samples
        runs.append({
            "rows": [(Path(p).name, int(lab)) for p, lab in zip(val.image_path, val.label_index)],
            "train": list(dm.train_data.samples.image_path),
            "images": _arrays(tmp_path / name / "images"),
            "masks": _arrays(tmp_path / name / "masks"),
        })
    a, b, c = runs
    assert a["rows"] == b["rows"] and a["train"] == b["train"]
    assert a["images"].keys() == b["images"].keys() and len(a["images"]) == 3
    assert all(np.array_equal(a["images"][k], b["images"][k]) for k in a["images"])
    assert all(np.array_equal(a["masks"][k], b["masks"][k]) for k in a["masks"])
    assert all(v.any() for v in a["masks"].values())
    differs = a["rows"] != c["rows"] or any(
        not np.array_equal(x, y) for x, y in zip(a["masks"].values(), c["masks"].values()))
    assert differs


def test_rerun_replaces_stale_files(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "val" / "images").mkdir(parents=True)
    (tmp_path / "val" / "images" / "old.png").write_bytes(b"stale")
    dm = _datamodule(data_root)
    apply_synthetic_validation(dm, PerlinSynthesizer(), ratio=0.25, output_dir=tmp_path / "val")
    names = sorted(p.name for p in (tmp_path / "val" / "images").iterdir())
    assert "old.png" not in names and len(names) == 2


def test_trainer_setup_keeps_the_split(data_root: Path, tmp_path: Path) -> None:
    from anomalib.data import MVTecAD
    from lightning.pytorch.trainer.states import TrainerFn

    dm = MVTecAD(root=data_root, category="thing", num_workers=0)
    dm.setup()  # a plain setup: anomalib would redo the splits on the Trainer's setup call
    apply_synthetic_validation(dm, PerlinSynthesizer(), output_dir=tmp_path / "val")
    dm.setup(TrainerFn.FITTING)
    assert len(dm.train_data) == N_TRAIN - 2 and len(dm.val_data) == 2


def test_from_test_split_is_given_back(data_root: Path, tmp_path: Path) -> None:
    dm = _datamodule(data_root, val_split_mode="from_test", val_split_ratio=0.5)
    assert needs_honest_validation(dm) and len(dm.test_data) == 2
    apply_synthetic_validation(dm, PerlinSynthesizer(), output_dir=tmp_path / "val")
    assert len(dm.test_data) == 4 and sorted(dm.test_data.samples.label_index) == [0, 0, 1, 1]



@pytest.mark.parametrize("stage", ["test", "predict"])
def test_the_engine_keeps_a_folders_test_split_whole_at_every_stage(data_root: Path, tmp_path: Path,
                                                                     stage: str) -> None:
    """Regression: anomalib's Folder moves half its test images into validation by default (from_test); the engine
    undid that only while fitting (its honest split gives the images back), so 'uad test' of a Folder checkpoint
    scored half the test set."""
    from anomalib.data import Folder

    from uad_plugins.engine.engine import UadEngine

    dm = Folder(name="thing", root=data_root / "thing", normal_dir="train/good", abnormal_dir="test/bad",
                normal_test_dir="test/good", mask_dir="ground_truth/bad", num_workers=0, seed=0)
    UadEngine(default_root_dir=tmp_path / "runs", seed=0, heatmaps=False).prepare_data(dm, stage)
    assert len(dm.test_data) == 4 and sorted(dm.test_data.samples.label_index) == [0, 0, 1, 1]


def test_anomalib_synthetic_split_is_given_back(data_root: Path, tmp_path: Path) -> None:
    dm = _datamodule(data_root, val_split_mode="synthetic", val_split_ratio=0.5)
    assert len(dm.train_data) == N_TRAIN // 2
    apply_synthetic_validation(dm, PerlinSynthesizer(), ratio=0.25, output_dir=tmp_path / "val")
    assert len(dm.train_data) == N_TRAIN - 3 and len(dm.val_data) == 3


def test_too_few_images(data_root: Path, tmp_path: Path) -> None:
    for extra in range(2, N_TRAIN):
        (data_root / "thing" / "train" / "good" / f"{extra:03d}.png").unlink()
    dm = _datamodule(data_root)
    assert len(dm.train_data) == 2
    with pytest.raises(DataError, match="2 normal training image"):
        apply_synthetic_validation(dm, PerlinSynthesizer(), output_dir=tmp_path / "val")
    assert len(dm.train_data) == 2


def test_bad_arguments(data_root: Path, tmp_path: Path) -> None:
    dm = _datamodule(data_root)
    with pytest.raises(ConfigError, match="ratio"):
        apply_synthetic_validation(dm, PerlinSynthesizer(), ratio=1.5, output_dir=tmp_path)
    with pytest.raises(ConfigError, match="anomalous_fraction"):
        apply_synthetic_validation(dm, PerlinSynthesizer(), anomalous_fraction=-0.1, output_dir=tmp_path)


class _Flaky(Synthesizer):
    """Returns an empty mask for the first ``empty`` calls, then a square."""

    def __init__(self, empty: int) -> None:
        self.empty = empty
        self.seeds: list[int] = []

    def __call__(self, sample: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.seeds.append(int(seed or 0))
        return super().__call__(sample, seed)

    def synthesize(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.zeros(1, *sample.shape[-2:])
        if len(self.seeds) > self.empty:
            mask[:, 4:12, 4:12] = 1
        return sample * (1 - mask) + mask, mask


def test_empty_masks_are_retried_then_refused(data_root: Path, tmp_path: Path) -> None:
    dm = _datamodule(data_root)
    flaky = _Flaky(empty=2)
    info = apply_synthetic_validation(dm, flaky, ratio=0.25, seed=5, output_dir=tmp_path / "v")
    assert flaky.seeds == [5, 7, 9, 6] and info["n_val_anomalous"] == 2

    dm = _datamodule(data_root)
    with pytest.raises(DataError, match="empty mask"):
        apply_synthetic_validation(dm, _Flaky(empty=100), output_dir=tmp_path / "w")


@pytest.mark.parametrize(("mode", "expected"), [
    ("same_as_test", True), ("from_test", True), ("synthetic", True), ("none", True),
    ("from_train", False), ("from_dir", False),
])
def test_needs_honest_validation(mode: str, expected: bool) -> None:
    from anomalib.data import MVTecAD

    assert needs_honest_validation(MVTecAD(root="/nowhere", category="x", val_split_mode=mode)) is expected
