"""Unified (multi-class) datamodules, the per-category metrics callback and the argv rewriting."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)

MVTEC_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mvtec_ad_256"


def _write(path: Path, value: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def make_category_folders(root: Path, categories: tuple[str, ...] = ("alpha", "beta"), n_train: int = 6) -> Path:
    """A tiny MVTec-like layout: <root>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>}."""
    for k, category in enumerate(categories):
        base = root / category
        for i in range(n_train):
            _write(base / "train" / "good" / f"{i:03d}.png", 100 + k + i)
        for i in range(2):
            _write(base / "test" / "good" / f"{i:03d}.png", 120 + k + i)
        for defect in ("dent", "spot"):
            for i in range(2):
                _write(base / "test" / defect / f"{i:03d}.png", 200 + k + i)
                mask = np.zeros((40, 40), dtype=np.uint8)
                mask[5:15, 5:15] = 255
                (base / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(base / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


# ------------------------------------------------------------------ categories and errors
def test_parse_categories() -> None:
    from uad_plugins.data.multiclass import parse_categories

    assert parse_categories("all") == "all"
    assert parse_categories(["all"]) == "all"
    assert parse_categories("[bottle, cable]") == ["bottle", "cable"]
    assert parse_categories("a,b,a") == ["a", "b"]
    assert parse_categories(("x",)) == ["x"]


def test_unknown_demo_category_lists_the_available_ones() -> None:
    from uad_plugins.data.multiclass import UnifiedUadDemo
    from uad_plugins.errors import DataError

    with pytest.raises(DataError, match="unknown category 'wave'") as err:
        UnifiedUadDemo(categories=["weave", "wave"])
    assert "weave, washer, tile" in str(err.value) and "did you mean 'weave'" in str(err.value)


def test_demo_labels_and_names() -> None:
    from uad_plugins.data.multiclass import UnifiedUadDemo

    dm = UnifiedUadDemo(categories="all")
    assert dm.categories == ["weave", "washer", "tile"] and dm.category == "all" and dm.name == "UadDemo"
    dm = UnifiedUadDemo(categories="tile,weave")
    assert dm.categories == ["tile", "weave"] and dm.category == "tile+weave"


def test_category_folders_all_discovers_the_category_folders(tmp_path: Path) -> None:
    from uad_plugins.data.multiclass import CategoryFolders
    from uad_plugins.errors import DataError

    root = make_category_folders(tmp_path / "parts")
    (root / "notes").mkdir()  # no train/good: not a category
    dm = CategoryFolders(root=root, categories="all")
    assert dm.categories == ["alpha", "beta"] and dm.name == "parts"
    with pytest.raises(DataError, match="unknown category 'gamma'") as err:
        CategoryFolders(root=root, categories=["alpha", "gamma"])
    assert "alpha, beta" in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        CategoryFolders(root=tmp_path / "missing")


def test_mvtec_missing_or_unknown_categories(tmp_path: Path) -> None:
    from uad_plugins.data.multiclass import UnifiedMVTecAD
    from uad_plugins.errors import DataError

    with pytest.raises(DataError, match=r"no categories found.*never downloads"):
        UnifiedMVTecAD(root=tmp_path, categories="all")
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    assert UnifiedMVTecAD(root=tmp_path, categories="all").categories == ["bottle"]
    with pytest.raises(DataError, match="'cable' not found"):
        UnifiedMVTecAD(root=tmp_path, categories=["bottle", "cable"])
    with pytest.raises(DataError, match="unknown category 'botle'"):
        UnifiedMVTecAD(root=tmp_path, categories=["botle"])


# ------------------------------------------------------------------ set-up, counts, validation
def test_category_folders_counts_are_the_sums_and_validation_covers_every_category(tmp_path: Path) -> None:
    from anomalib.data import Folder

    from uad_plugins.data import prepare_datamodule
    from uad_plugins.data.multiclass import CategoryFolders
    from uad_plugins.factory import create_synthesizer

    root = make_category_folders(tmp_path / "parts")
    dm = CategoryFolders(root=root, categories="all", val_split_mode="none", seed=0)
    counts = prepare_datamodule(dm, "fit")
    singles = []
    for category in ("alpha", "beta"):
        one = Folder(name=category, root=root / category, normal_dir="train/good", normal_test_dir="test/good",
                     abnormal_dir=["test/dent", "test/spot"], mask_dir=["ground_truth/dent", "ground_truth/spot"],
                     val_split_mode="none", seed=0)
        singles.append(prepare_datamodule(one, "fit"))
    assert counts["train"] == sum(s["train"] for s in singles) == 12
    assert counts["test"] == sum(s["test"] for s in singles) == 12
    assert dm.test_data.task.value == "segmentation"
    assert set(dm.test_data.samples["category"]) == {"alpha", "beta"}
    paths = list(dm.test_data.samples["image_path"])
    assert dm.category_of(paths) == list(dm.test_data.samples["category"])
    assert dm.category_of(["/nowhere.png"]) == [""]

    info = dm.stratified_synthetic_validation(create_synthesizer("plugin:perlin"), ratio=0.34, seed=0,
                                              output_dir=tmp_path / "validation")
    val = dm.val_data.samples
    assert set(val["category"]) == {"alpha", "beta"}
    for category in ("alpha", "beta"):
        rows = val[val["category"] == category]
        assert set(rows["label_index"]) == {0, 1}  # normal and synthetic anomalous images of every category
        assert info["per_category"][category] == {"n_train": 4, "n_val_normal": 1, "n_val_anomalous": 1}
    assert info["n_train"] == len(dm.train_data) == 8 and info["stratified_by"] == "category"
    assert not set(val["image_path"]) & set(dm.train_data.samples["image_path"])
    assert dm.category_of(list(val["image_path"])) == list(val["category"])


def test_demo_counts_equal_the_sum_of_the_categories() -> None:
    from uad_plugins.data import UadDemo, prepare_datamodule
    from uad_plugins.data.multiclass import UnifiedUadDemo

    dm = UnifiedUadDemo(categories=["weave", "tile"])
    counts = prepare_datamodule(dm, "fit")
    single = [prepare_datamodule(UadDemo(category=c), "fit") for c in ("weave", "tile")]
    assert counts == {split: sum(s[split] for s in single) for split in counts}
    assert dm.train_data.samples.groupby("category").size().to_dict() == {"tile": 60, "weave": 60}


def test_single_category_demo_is_unchanged() -> None:
    from uad_plugins.data import UadDemo, prepare_datamodule

    dm = UadDemo(category="washer")
    assert prepare_datamodule(dm, "fit") == {"train": 60, "val": 30, "test": 30}
    assert dm.category == "washer" and "category" not in dm.train_data.samples
    assert not hasattr(dm, "category_of")


@pytest.mark.shared_data
@pytest.mark.skipif(not (MVTEC_ROOT / "bottle").is_dir(), reason="shared MVTec AD bottle not available")
def test_unified_mvtec_on_the_shared_data() -> None:
    from uad_plugins.data import prepare_datamodule
    from uad_plugins.data.multiclass import UnifiedMVTecAD

    dm = UnifiedMVTecAD(root=MVTEC_ROOT, categories="all", num_workers=0)
    assert dm.categories[0] == "bottle" and dm.name == "MVTecAD" and dm.category == "all"
    counts = prepare_datamodule(dm, "test")
    assert counts["test"] == len(dm.test_data) > 0
    assert set(dm.test_data.samples["category"]) == set(dm.categories)


# ------------------------------------------------------------------ per-category metrics
def _batch(scores: list[float], labels: list[int], paths: list[str]) -> SimpleNamespace:
    return SimpleNamespace(pred_score=torch.tensor(scores), gt_label=torch.tensor(labels), image_path=paths,
                           anomaly_map=None, gt_mask=None, pred_label=None, pred_mask=None, mask_path=None)


def test_per_category_metrics_match_metrics_on_each_subset() -> None:
    from uad_plugins.engine.categories import PerCategoryMetrics
    from uad_plugins.factory import create_metric

    rng = np.random.default_rng(0)
    categories = {f"{c}{i}.png": c for c in "ab" for i in range(10)}
    paths = list(categories)
    rng.shuffle(paths)
    scores = rng.random(len(paths)).tolist()
    labels = [i % 2 for i in range(len(paths))]
    callback = PerCategoryMetrics(["plugin:image_auroc", "plugin:image_f1max"],
                                  category_of=lambda ps: [categories[p] for p in ps])
    callback.on_test_epoch_start(None, None)
    for start in range(0, len(paths), 6):
        batch = _batch(scores[start:start + 6], labels[start:start + 6], paths[start:start + 6])
        callback.on_test_batch_start(None, None, batch, 0)
        callback.on_test_batch_end(None, None, batch, batch, 0)
    callback.on_test_epoch_end(None, None)
    assert set(callback.per_category) == {"a", "b"}
    for category in "ab":
        rows = [i for i, p in enumerate(paths) if categories[p] == category]
        metric = create_metric("plugin:image_auroc")
        metric.update(_batch([scores[i] for i in rows], [labels[i] for i in rows], [paths[i] for i in rows]))
        assert callback.per_category[category]["image_AUROC"] == pytest.approx(float(metric.compute()))
    expected = (callback.per_category["a"]["image_AUROC"] + callback.per_category["b"]["image_AUROC"]) / 2
    assert callback.mean["image_AUROC"] == pytest.approx(expected)


def test_per_category_metrics_reads_batches_after_post_processing() -> None:
    """The update is deferred: a change made to the batch after this callback's hook is seen."""
    from uad_plugins.engine.categories import PerCategoryMetrics

    callback = PerCategoryMetrics(["plugin:image_auroc"], category_of=lambda ps: ["a"] * len(ps))
    callback.on_test_epoch_start(None, None)
    batch = _batch([0.9, 0.1, 0.8, 0.2], [0, 1, 0, 1], ["1", "2", "3", "4"])
    callback.on_test_batch_end(None, None, batch, batch, 0)
    batch.pred_score = 1.0 - batch.pred_score  # what a post-processor running later would do, in place
    callback.on_test_epoch_end(None, None)
    assert callback.per_category["a"]["image_AUROC"] == pytest.approx(1.0)


def test_category_count() -> None:
    from uad_plugins.data import UadDemo
    from uad_plugins.data.multiclass import UnifiedUadDemo
    from uad_plugins.engine.categories import category_count

    assert category_count(UadDemo()) == 0
    assert category_count(UnifiedUadDemo()) == 3
    assert category_count(None) == 0


# ------------------------------------------------------------------ argv and config rewriting
def test_argv_rewriting() -> None:
    from uad_plugins.cli.resolve import normalise_argv
    from uad_plugins.errors import ConfigError

    norm = normalise_argv(["--data.categories", "all"])
    assert norm.argv[:2] == ["--data", "uad_plugins.data.multiclass.UnifiedUadDemo"] and "data" in norm.has
    assert normalise_argv(["--data", "MVTecAD", "--data.categories", "[bottle, cable]"]).argv[1] == \
        "uad_plugins.data.multiclass.UnifiedMVTecAD"
    assert normalise_argv(["--data", "anomalib.data.Visa", "--data.categories=all"]).argv[1] == \
        "uad_plugins.data.multiclass.UnifiedVisa"
    assert normalise_argv(["--data=Folder", "--data.categories", "all"]).argv[0] == \
        "--data=uad_plugins.data.multiclass.CategoryFolders"
    assert normalise_argv(["--data", "MVTecAD", "--data.root", "R"]).argv == ["--data", "MVTecAD", "--data.root", "R"]
    config = normalise_argv(["--config", "data:\n  class_path: MVTecAD\n  init_args:\n    categories: all\n"]).argv[1]
    assert "UnifiedMVTecAD" in config
    config = normalise_argv(["--config", "data: Visa\n", "--data.categories", "all"]).argv[1]
    assert "UnifiedVisa" in config
    with pytest.raises(ConfigError, match="does not support categories") as err:
        normalise_argv(["--data", "Kolektor", "--data.categories", "all"])
    assert "MVTecAD" in str(err.value)
