"""plugin:cutpaste: both variants paste a visible region, the mask is exactly the changed pixels, settings are
checked, seeds reproduce, batches work, and ``uad synth`` drives it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uad_plugins.errors import ConfigError
from uad_plugins.plugins.cutpaste.synthesizer import CutPasteSynthesizer


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def image(size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def changed(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (out - ref).abs().amax(-3) > 0


@pytest.mark.parametrize("variant", ["normal", "scar", "union"])
@pytest.mark.parametrize("jitter", [True, False])
def test_mask_is_exactly_the_changed_pixels(variant: str, jitter: bool) -> None:
    synth = CutPasteSynthesizer(variant=variant, color_jitter=jitter)
    img = image()
    for seed in range(8):
        out, mask = synth(img, seed=seed)
        assert out.shape == img.shape and mask.shape == (1, 64, 64)
        assert out.dtype == torch.float32 and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(mask[0].bool(), changed(out, img))


def test_normal_patch_size_and_scar_shape() -> None:
    img = image(128)
    normal = CutPasteSynthesizer(variant="normal", area_ratio=(0.1, 0.1), aspect_ratio=(1.0, 1.0))
    _, mask = normal(img, seed=0)
    assert float(mask.mean()) == pytest.approx(0.1, rel=0.1)  # one square of 10 % of the image
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    assert int(mask.sum()) == (int(ys.max() - ys.min()) + 1) * (int(xs.max() - xs.min()) + 1)  # a rectangle
    scar = CutPasteSynthesizer(variant="scar", scar_width=(3, 3), scar_length=(20, 20), scar_rotation=(0, 0))
    _, mask = scar(img, seed=0)
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    assert int(mask.sum()) == 60 and int(ys.max() - ys.min()) + 1 == 20 and int(xs.max() - xs.min()) + 1 == 3
    rotated = CutPasteSynthesizer(variant="scar", scar_width=(4, 4), scar_length=(24, 24), scar_rotation=(45, 45))
    _, mask = rotated(img, seed=0)
    assert 70 <= int(mask.sum()) <= 120  # about 4 x 24 pixels, now diagonal
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    assert int(ys.max() - ys.min()) > 12 and int(xs.max() - xs.min()) > 12


def test_union_uses_both_variants() -> None:
    synth = CutPasteSynthesizer(variant="union", scar_width=(2, 2), scar_length=(10, 10))
    sizes = {int(synth(image(), seed=s)[1].sum()) for s in range(12)}
    assert any(s <= 20 for s in sizes) and any(s > 60 for s in sizes)  # scars (2 x 10) and patches (>= 2 %)
    assert CutPasteSynthesizer(variant="binary").variant == "union"  # OneNIP's name


def test_reproducible_per_seed_and_keeps_global_rng() -> None:
    img = image()
    a = CutPasteSynthesizer(variant="union")(img, seed=5)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    b = CutPasteSynthesizer(variant="union")(img, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = CutPasteSynthesizer(variant="union")(img, seed=6)
    assert not torch.equal(a[1], c[1]) or not torch.equal(a[0], c[0])


def test_batch_input() -> None:
    batch = torch.stack([image(seed=i) for i in range(3)])
    out, mask = CutPasteSynthesizer(variant="scar")(batch, seed=0)
    assert out.shape == (3, 3, 64, 64) and mask.shape == (3, 1, 64, 64)
    assert all(mask[i].sum() > 0 for i in range(3))
    assert torch.equal(mask[:, 0].bool(), changed(out, batch))


def test_flat_image_without_jitter_changes_nothing_and_marks_nothing() -> None:
    flat = torch.full((3, 32, 32), 0.5)
    out, mask = CutPasteSynthesizer(color_jitter=False)(flat, seed=0)
    assert torch.equal(out, flat) and mask.sum() == 0


@pytest.mark.parametrize("kwargs", [
    {"variant": "blob"},
    {"area_ratio": (0.2, 0.1)},
    {"area_ratio": (0.0, 0.1)},
    {"area_ratio": (0.1, 1.5)},
    {"aspect_ratio": (-1.0, 2.0)},
    {"aspect_ratio": (3.0, 0.3)},
    {"scar_width": (16, 2)},
    {"scar_width": (0, 4)},
    {"scar_length": (2.5, 10)},
    {"scar_rotation": (45, -45)},
    {"scar_rotation": (-200, 0)},
    {"hue": 0.7},
    {"brightness": -0.1},
    {"area_ratio": "big"},
])
def test_invalid_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        CutPasteSynthesizer(**kwargs)


def test_rejects_non_images() -> None:
    with pytest.raises(ConfigError):
        CutPasteSynthesizer()(torch.rand(1, 32, 32))


def test_cli_scar(tmp_path: Path) -> None:
    from uad_plugins.cli.main import main

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(src / f"{i}.png")
    out = tmp_path / "out"
    code = main(["synth", "--synthesizer", "plugin:cutpaste", "--synthesizer.variant", "scar",
                 "--synthesizer.scar_rotation", "[-10, 10]", "--input", str(src), "--output", str(out),
                 "--seed", "3"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"] == {"variant": "scar", "scar_rotation": [-10, 10]}
    assert len(manifest["items"]) == 2
    for item in manifest["items"]:
        mask = np.array(Image.open(out / item["mask"]))
        assert 0 < item["anomaly_fraction"] < 0.3 and mask.max() == 255
    assert main(["synth", "--synthesizer", "plugin:cutpaste", "--synthesizer.variant", "wrong", "--input",
                 str(src), "--output", str(tmp_path / "bad")]) == 2
