"""`uad synth`: images, masks and a manifest, reproducible, written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _images(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_synth_writes_images_masks_and_manifest(uad, tmp_path: Path) -> None:
    src = _images(tmp_path / "in")
    code, _out, err = uad("synth", "--synthesizer", "plugin:perlin", "--input", src, "--output", tmp_path / "a",
                         "--seed", "3", "--count", "2")
    assert code == 0, err
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert len(manifest["items"]) == 6 and manifest["synthesizer"]["reference"] == "plugin:perlin"
    for item in manifest["items"]:
        mask = np.array(Image.open(tmp_path / "a" / item["mask"]))
        image = Image.open(tmp_path / "a" / item["image"])
        assert image.size == (48, 48) and set(np.unique(mask)) <= {0, 255}
        assert item["anomaly_fraction"] == round(float((mask > 0).mean()), 6)


def test_synth_is_reproducible_and_options_pass_through(uad, tmp_path: Path) -> None:
    src = _images(tmp_path / "in", n=2)
    for name in ("a", "b"):
        code, _, err = uad("synth", "--synthesizer", "plugin:perlin", "--synthesizer.blend_factor", "[0.5, 0.5]",
                           "--input", src, "--output", tmp_path / name, "--seed", "11")
        assert code == 0, err
    for file in sorted((tmp_path / "a" / "images").iterdir()):
        assert file.read_bytes() == (tmp_path / "b" / "images" / file.name).read_bytes()
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["options"] == {"blend_factor": [0.5, 0.5]}


def test_synth_errors(uad, tmp_path: Path) -> None:
    src = _images(tmp_path / "in", n=1)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    code, _, err = uad("synth", "--synthesizer", "plugin:perlin", "--input", src, "--output", tmp_path / "taken")
    assert code == 2 and "not empty" in err
    (tmp_path / "empty").mkdir()
    code, _, err = uad("synth", "--synthesizer", "plugin:perlin", "--input", tmp_path / "empty",
                       "--output", tmp_path / "o")
    assert code == 2 and "no images" in err and not (tmp_path / "o").exists()
    code, _, err = uad("synth", "--synthesizer", "plugin:perlin", "--synthesizer.probability", "7",
                       "--input", src, "--output", tmp_path / "o2")
    assert code == 2 and "probability" in err and not (tmp_path / "o2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written temp folders
