"""The opt-in frozen-feature cache (issue 15): hits, invalidation by file identity, the memory budget, disk entries
read without running code, and fits with the cache giving the same model as fits without it."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from uad_plugins.components.feature_cache import FeatureCache, deterministic_transform, feature_signature
from uad_plugins.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


class Counting:
    """A frozen 'backbone': two maps per image, counting the images it is run on."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.images += int(images.shape[0])
        pooled = torch.nn.functional.avg_pool2d(images, 2)
        return [pooled * 2.0, pooled.mean(dim=1, keepdim=True)]


def image_files(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        path.write_bytes(bytes([i]) * 64)
        paths.append(str(path))
    return paths


def batch_for(paths: list[str]) -> torch.Tensor:
    """A batch whose rows depend on the files' bytes (as a decoded image would)."""
    rows = [torch.full((3, 8, 8), float(Path(p).read_bytes()[0]) + Path(p).stat().st_size / 1000) for p in paths]
    return torch.stack(rows)


def cache(mode: str = "memory", signature: str = "sig", **kwargs: object) -> FeatureCache:
    made = FeatureCache(mode, **kwargs)  # type: ignore[arg-type]
    made.bind(signature)
    return made


# ---------------------------------------------------------------------------------------------- the cache alone
def test_second_pass_hits_and_matches_the_computed_features(tmp_path: Path) -> None:
    paths = image_files(tmp_path, 6)
    net, store = Counting(), cache()
    first = [store.features(batch_for(paths[i:i + 4]), paths[i:i + 4], net) for i in (0, 4)]
    assert net.images == 6 and (store.hits, store.misses) == (0, 6)
    # another batching of the same files: everything served, nothing computed
    again = store.features(batch_for(paths[2:6]), paths[2:6], net)
    assert net.images == 6 and store.hits == 4
    want = Counting()(batch_for(paths[2:6]))
    for got, expected in zip(again, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert len(first[0]) == 2 and first[1][0].shape == (2, 3, 4, 4)
    # a mixed batch: only the new file is computed, rows stay in order
    extra = image_files(tmp_path / "more", 1)
    mixed = [paths[0], extra[0], paths[1]]
    got = store.features(batch_for(mixed), mixed, net)
    assert net.images == 7
    for g, e in zip(got, Counting()(batch_for(mixed)), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_a_single_tensor_comes_back_as_a_tensor(tmp_path: Path) -> None:
    paths = image_files(tmp_path, 2)
    store = cache()
    for _ in range(2):
        out = store.features(batch_for(paths), paths, lambda x: x * 3)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 8, 8)
    assert store.hits == 2


@pytest.mark.parametrize("change", ["content", "mtime", "replaced"])
def test_a_changed_file_misses(tmp_path: Path, change: str) -> None:
    paths = image_files(tmp_path, 3)
    net, store = Counting(), cache()
    store.features(batch_for(paths), paths, net)
    target = Path(paths[1])
    info = target.stat()
    if change == "content":  # same size, same mtime restored: the inode change time still tells
        target.write_bytes(bytes([200]) * 64)
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    elif change == "mtime":
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    else:
        other = tmp_path / "new.png"
        other.write_bytes(bytes([99]) * 64)
        os.replace(other, target)
    got = store.features(batch_for(paths), paths, net)
    assert net.images == 4 and (store.hits, store.misses) == (2, 4)
    for g, e in zip(got, Counting()(batch_for(paths)), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_another_signature_never_reads_these_features(tmp_path: Path) -> None:
    paths = image_files(tmp_path, 2)
    store = cache("disk", folder=tmp_path / "cache")
    store.features(batch_for(paths), paths, Counting())
    other = cache("disk", "another model", folder=tmp_path / "cache")
    net = Counting()
    other.features(batch_for(paths), paths, net)
    assert net.images == 2 and other.hits == 0
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 4


def test_memory_budget_is_never_exceeded_and_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = image_files(tmp_path, 8)
    entry = 3 * 4 * 4 * 4 + 4 * 4 * 4  # the two maps of one image, float32
    store = cache(budget_mb=2.5 * entry / 2**20)
    net = Counting()
    with caplog.at_level(logging.INFO, logger="uad_plugins"):
        for _ in range(3):
            for i in (0, 4):
                store.features(batch_for(paths[i:i + 4]), paths[i:i + 4], net)
                assert store.stored_bytes <= store.budget_bytes
    assert store.entries == 2 and store.stored_bytes == 2 * entry
    assert net.images == 8 + 2 * 6 and store.hits == 2 * 2  # the 6 images left out are computed every pass
    assert store.stats()["budget_full"] is True
    assert sum("budget is full" in r.getMessage() for r in caplog.records) == 1


def test_disk_round_trip_in_a_later_run(tmp_path: Path) -> None:
    paths = image_files(tmp_path / "img", 5)
    folder = tmp_path / "cache"
    first = cache("disk", folder=folder)
    want = first.features(batch_for(paths), paths, Counting())
    first.close()  # kept: remove_on_close is False
    assert len(list(folder.glob("*.npy"))) == 5 and not list(folder.glob(".*"))  # no temporary file left
    later, net = cache("disk", folder=folder), Counting()
    got = later.features(batch_for(paths), paths, net)
    assert net.images == 1 and later.hits == 5  # one image tells the layout; the rest is read
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npy"))


class _Boom:
    """Unpickling this would create a file: it must never happen."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (open, (str(self.flag), "w"))


@pytest.mark.parametrize("damage", ["truncated", "pickled", "huge header", "wrong dtype", "garbage"])
def test_a_damaged_or_foreign_entry_is_a_miss_never_run_and_left_alone(tmp_path: Path, damage: str) -> None:
    paths = image_files(tmp_path / "img", 2)
    folder = tmp_path / "cache"
    want = cache("disk", folder=folder).features(batch_for(paths), paths, Counting())
    victim = _entries(folder)[0]
    flag = tmp_path / "ran"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:-7])
    elif damage == "pickled":
        with open(victim, "wb") as fh:
            np.lib.format.write_array(fh, np.array([_Boom(flag)], dtype=object), allow_pickle=True)
    elif damage == "huge header":
        header = np.lib.format.header_data_from_array_1_0(np.zeros(4, np.float32))
        header["shape"] = (2**40,)
        with open(victim, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            fh.write(b"\0" * 16)
    elif damage == "wrong dtype":
        np.save(victim, np.zeros(victim.stat().st_size // 8, np.float64))
    else:
        victim.write_bytes(pickle.dumps(_Boom(flag)))
    content = victim.read_bytes()
    later, net = cache("disk", folder=folder, remove_on_close=True), Counting()
    got = later.features(batch_for(paths), paths, net)
    assert not flag.exists()
    assert later.rejected == 1 and later.hits == 1 and net.images == 2  # layout probe + the damaged one
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    later.close()
    assert victim.read_bytes() == content  # not ours: never replaced nor removed
    assert len(_entries(folder)) == 2


def test_close_removes_only_what_it_wrote(tmp_path: Path) -> None:
    paths = image_files(tmp_path / "img", 3)
    folder = tmp_path / "cache"
    folder.mkdir()
    theirs = folder / "notes.npy"
    theirs.write_bytes(b"someone else's")
    store = cache("disk", folder=folder, remove_on_close=True)
    store.features(batch_for(paths), paths, Counting())
    assert len(_entries(folder)) == 4
    store.close()
    assert _entries(folder) == [theirs] and theirs.read_bytes() == b"someone else's"
    made = tmp_path / "made"
    own = cache("disk", folder=made, remove_on_close=True)
    own.features(batch_for(paths), paths, Counting())
    own.close()
    assert not made.exists()  # it made the folder and left it empty


def test_disk_budget_is_never_exceeded(tmp_path: Path) -> None:
    paths = image_files(tmp_path / "img", 6)
    store = cache("disk", folder=tmp_path / "cache", budget_mb=700 / 2**20)  # two entries of 128 + 256 bytes
    store.features(batch_for(paths), paths, Counting())
    files = _entries(tmp_path / "cache")
    assert len(files) == 1 and sum(f.stat().st_size for f in files) == store.stored_bytes <= store.budget_bytes


def test_batches_without_paths_are_computed(tmp_path: Path) -> None:
    store, net = cache(), Counting()
    for _ in range(2):
        store.features(torch.rand(2, 3, 8, 8), None, net)
    assert net.images == 4 and store.entries == 0


@pytest.mark.parametrize(("mode", "budget"), [("ram", 10), ("memory", 0), ("memory", -1), ("memory", True)])
def test_bad_options(mode: str, budget: object) -> None:
    with pytest.raises(ConfigError, match="feature_cache"):
        FeatureCache(mode, budget_mb=budget)  # type: ignore[arg-type]


def test_signature_follows_the_weights() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 4, 3)
    before = feature_signature("model", "transform", modules=[layer])
    assert before == feature_signature("model", "transform", modules=[layer])
    assert before != feature_signature("model", "another transform", modules=[layer])
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] += 1e-6
    assert before != feature_signature("model", "transform", modules=[layer])


def test_deterministic_transforms() -> None:
    from torchvision.transforms.v2 import CenterCrop, Compose, RandomHorizontalFlip, Resize

    assert deterministic_transform(Compose([Resize((64, 64)), CenterCrop(60)]))
    assert not deterministic_transform(Compose([Resize((64, 64)), RandomHorizontalFlip()]))


# ---------------------------------------------------------------------------------------------- real fits
PBAS = {"backbone": "resnet18", "layers": ["layer2", "layer3"], "pretrained": False, "image_size": 64,
        "pretrain_embed_dimension": 32, "target_embed_dimension": 32, "dsc_hidden": 16}
PRADOT = {"backbone": "resnet18", "layers": ["layer3"], "pretrained": False, "image_size": 64, "num_prototypes": 2,
          "num_iterations": 20}
UNIAD = {"pretrained": False, "image_size": 64, "hidden_dim": 32, "num_heads": 2, "num_encoder_layers": 1,
         "num_decoder_layers": 1, "dim_feedforward": 64, "neighbor_size": 3}
HETNET = {"pretrained": False, "vit_pretrained": False, "image_size": 64, "vit_layers": [1], "fusion_dim": 16,
          "embed_dim": 32}


def _model(name: str) -> object:
    from uad_plugins.plugins.hetnet.model import HetNet
    from uad_plugins.plugins.pbas.model import Pbas
    from uad_plugins.plugins.pradot.model import Pradot
    from uad_plugins.plugins.uniad.model import Uniad

    torch.manual_seed(0)
    built = {"pbas": lambda: Pbas(**PBAS), "pradot": lambda: Pradot(**PRADOT), "uniad": lambda: Uniad(**UNIAD),
             "hetnet": lambda: HetNet(**HETNET)}
    return built[name]()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uad_plugins.testing import make_synthetic_image_dataset

    root = tmp_path_factory.mktemp("feature_cache")
    make_synthetic_image_dataset(root / "data", n_train=10)
    return root


def _fit(root: Path, name: str, cache_mode: str | None, **engine: object) -> tuple[object, object, list[int]]:
    """A 2-epoch fit; the model, the engine, and the batch sizes its backbone saw while training."""
    from anomalib.data import MVTecAD

    from uad_plugins.engine import UadEngine

    datamodule = MVTecAD(root=root / "data", category="synthetic", train_batch_size=4, eval_batch_size=4,
                         num_workers=0, seed=0)
    model = _model(name)
    extractor = model.frozen_feature_modules()[0]  # type: ignore[attr-defined]
    seen: list[int] = []
    forward = extractor.forward

    def counting(images: torch.Tensor) -> list[torch.Tensor]:
        if model._trainer is not None and model.trainer.training:
            seen.append(int(images.shape[0]))
        return forward(images)

    extractor.forward = counting
    run = UadEngine(default_root_dir=root / "runs", seed=0, heatmaps=False, accelerator="cpu", devices=1,
                    max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    feature_cache=cache_mode, **engine)
    run.fit(model=model, datamodule=datamodule)
    del extractor.forward
    return model, run, seen


def _maps(model: object) -> torch.Tensor:
    noise = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    images = torch.stack([torch.linspace(0, 1, 64 * 64 * 3).reshape(3, 64, 64), noise])
    model.eval()  # type: ignore[attr-defined]
    with torch.no_grad():
        return model.model(model.preprocess(images)).anomaly_map  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pbas", "pradot", "uniad", "hetnet"])
def test_a_cached_fit_equals_an_uncached_one(data_root: Path, name: str) -> None:
    plain, _, plain_seen = _fit(data_root, name, None)
    cached, run, seen = _fit(data_root, name, "memory")
    n_train = 8  # 10 normals, 2 held back for validation
    # PBAS: centre initialisation (through the cache) + two epochs; HetNet: the noise fit (not cached) + two epochs
    passes = {"pbas": 3, "hetnet": 3}.get(name, 2)
    assert sum(plain_seen) == n_train * passes
    assert sum(seen) == n_train * (2 if name == "hetnet" else 1)  # the backbone ran once per image in the cache
    stats = run.run_info["feature_cache"]
    assert stats["misses"] == n_train and stats["hits"] == n_train * (2 if name == "pbas" else 1)
    assert cached._feature_cache is None  # detached after the fit: later passes compute
    torch.testing.assert_close(_maps(cached), _maps(plain), rtol=0, atol=1e-5)
    if name not in ("pbas", "pradot"):
        return
    disk, disk_run, _ = _fit(data_root, name, "disk")
    torch.testing.assert_close(_maps(disk), _maps(plain), rtol=0, atol=1e-5)
    assert disk_run.run_info["feature_cache"]["hits"] == stats["hits"]
    assert not Path(disk_run.run_info["feature_cache"]["folder"]).exists()  # the run's own folder is cleaned up


@pytest.mark.slow
def test_a_shared_disk_folder_serves_a_later_run(data_root: Path, tmp_path: Path) -> None:
    _fit(data_root, "pradot", "disk", feature_cache_dir=tmp_path / "shared")
    assert len(_entries(tmp_path / "shared")) == 8
    _, run, seen = _fit(data_root, "pradot", "disk", feature_cache_dir=tmp_path / "shared")
    assert sum(seen) == 1 and run.run_info["feature_cache"]["hits"] == 16  # the layout probe only


def test_a_model_without_support_is_refused_before_any_run_folder(tmp_path: Path) -> None:
    from uad_plugins.engine import UadEngine
    from uad_plugins.plugins.pbas.model import Pbas

    class Plain(Pbas):
        supports_feature_cache = False

    engine = UadEngine(default_root_dir=tmp_path / "runs", feature_cache="memory", accelerator="cpu", logger=False)
    with pytest.raises(ConfigError, match="does not support a feature cache"):
        engine.fit(model=Plain(**PBAS), datamodule=None)
    assert not (tmp_path / "runs").exists()


def test_augmented_training_images_are_refused(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD
    from torchvision.transforms.v2 import RandomHorizontalFlip

    from uad_plugins.engine import UadEngine
    from uad_plugins.plugins.pradot.model import Pradot

    datamodule = MVTecAD(root=tmp_path, category="x", train_augmentations=RandomHorizontalFlip())
    engine = UadEngine(default_root_dir=tmp_path / "runs", feature_cache="disk", accelerator="cpu", logger=False)
    with pytest.raises(ConfigError, match="augmented"):
        engine.fit(model=Pradot(**PRADOT), datamodule=datamodule)


def test_engine_refuses_a_bad_mode() -> None:
    from uad_plugins.engine import UadEngine

    with pytest.raises(ConfigError, match="feature_cache must be one of memory, disk"):
        UadEngine(feature_cache="ram")
