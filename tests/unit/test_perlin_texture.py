"""plugin:perlin_texture: Perlin masks filled with procedural or folder textures, blended with opacity beta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uad_plugins.errors import ConfigError
from uad_plugins.plugins.perlin_texture.synthesizer import PerlinTextureSynthesizer
from uad_plugins.plugins.perlin_texture.textures import FAMILIES, augment_texture, procedural_texture


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


def image(size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def texture_dir(tmp_path: Path) -> Path:
    """A nested folder of two texture PNGs (one of another size) and a non-image file."""
    root = tmp_path / "textures"
    (root / "striped").mkdir(parents=True)
    (root / "dotted").mkdir()
    x = np.arange(40)
    stripes = np.stack([(np.sin(x / 2)[None, :] > 0).repeat(40, 0) * 255] * 3, -1).astype(np.uint8)
    Image.fromarray(stripes).save(root / "striped" / "a.png")
    Image.fromarray(np.full((50, 70, 3), (200, 30, 30), dtype=np.uint8)).save(root / "dotted" / "b.png")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("family", list(FAMILIES))
def test_procedural_families(family: str) -> None:
    torch.manual_seed(0)
    texture = procedural_texture(48, 40, (family,))
    assert texture.shape == (3, 48, 40) and 0.0 <= float(texture.min()) and float(texture.max()) <= 1.0
    assert float(texture.std()) > 0.02  # a pattern, not a flat colour
    augmented = augment_texture(texture)
    assert augmented.shape == texture.shape and 0.0 <= float(augmented.min()) and float(augmented.max()) <= 1.0


def test_procedural_blend_marks_the_blended_pixels() -> None:
    synth = PerlinTextureSynthesizer()
    img = image()
    fractions = []
    for seed in range(6):
        out, mask = synth(img, seed=seed)
        assert out.shape == img.shape and mask.shape == (1, 64, 64)
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
        assert set(mask.unique().tolist()) <= {0.0, 1.0} and mask.sum() > 0
        diff = (out - img).abs().amax(0)
        outside = mask[0] == 0
        assert torch.equal(out[:, outside], img[:, outside])  # nothing changes outside the mask
        assert float((diff[mask[0] > 0] > 1e-6).float().mean()) > 0.95
        fractions.append(float(mask.mean()))
    assert len(set(fractions)) > 1


def test_opacity_range() -> None:
    img = torch.zeros(3, 64, 64)
    out, mask = PerlinTextureSynthesizer(beta=(1.0, 1.0), augment=False, families=("checker",))(img, seed=0)
    inside = out[:, mask[0] > 0]
    assert float(inside.std()) > 0.05  # the texture itself shows through at full opacity
    faint, mask2 = PerlinTextureSynthesizer(beta=(0.1, 0.1), augment=False, families=("checker",))(img, seed=0)
    assert torch.equal(mask, mask2)
    assert torch.allclose(faint, out * 0.1, atol=1e-6)


def test_texture_folder(texture_dir: Path) -> None:
    synth = PerlinTextureSynthesizer(texture_dir=str(texture_dir), augment=False, beta=(1.0, 1.0))
    assert [p.name for p in synth.texture_files] == ["b.png", "a.png"]  # recursive, sorted, images only
    img = torch.full((3, 64, 64), 0.5)
    seen = set()
    for seed in range(8):
        out, mask = synth(img, seed=seed)
        assert mask.sum() > 0
        inside = out[:, mask[0] > 0]
        red = bool(torch.allclose(inside, torch.tensor([200, 30, 30])[:, None] / 255.0, atol=1e-3))
        seen.add("red" if red else "stripes")
        if not red:  # the black and white stripe texture, resized to 64 px: grey levels only
            assert torch.allclose(inside[0], inside[1]) and torch.allclose(inside[1], inside[2])
    assert seen == {"red", "stripes"}
    out, mask = PerlinTextureSynthesizer(texture_dir=texture_dir)(image(), seed=0)  # augmented, Path accepted
    assert out.shape == (3, 64, 64) and mask.sum() > 0


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        PerlinTextureSynthesizer(texture_dir=str(tmp_path / "dtd" / "images"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(ConfigError, match="has no images") as info:
        PerlinTextureSynthesizer(texture_dir=tmp_path / "empty")
    assert "procedural" in (info.value.hint or "")


def test_reproducible_and_batch() -> None:
    img = image()
    a = PerlinTextureSynthesizer()(img, seed=3)
    torch.rand(5)
    b = PerlinTextureSynthesizer()(img, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    batch = torch.stack([image(seed=i) for i in range(3)])
    out, mask = PerlinTextureSynthesizer(rotation=(-5, 5))(batch, seed=1)
    assert out.shape == (3, 3, 64, 64) and mask.shape == (3, 1, 64, 64)
    assert all(mask[i].sum() > 0 for i in range(3))


def test_non_square_and_no_rotation() -> None:
    img = torch.rand(3, 40, 72)
    out, mask = PerlinTextureSynthesizer(rotation=(0, 0), perlin_scale=(2, 8))(img, seed=0)
    assert out.shape == (3, 40, 72) and mask.shape == (1, 40, 72) and mask.sum() > 0


def test_probability_zero_leaves_the_image() -> None:
    img = image()
    out, mask = PerlinTextureSynthesizer(probability=0.0)(img, seed=0)
    assert torch.equal(out, img) and mask.sum() == 0


@pytest.mark.parametrize("kwargs", [
    {"beta": (0.8, 0.2)},
    {"beta": (0.0, 0.5)},
    {"beta": (0.5, 1.5)},
    {"perlin_scale": (3, 8)},
    {"perlin_scale": (8, 2)},
    {"perlin_scale": (0, 4)},
    {"threshold": 1.0},
    {"rotation": (90, -90)},
    {"rotation": (-360, 0)},
    {"probability": 1.5},
    {"families": ("noise", "plaid")},
    {"families": ()},
])
def test_invalid_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PerlinTextureSynthesizer(**kwargs)
