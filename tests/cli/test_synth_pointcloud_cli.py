"""`uad synth` on point clouds: clouds in their own format, per-point masks, previews, a manifest; bad input exit 2."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uad_plugins.data.pointcloud.io import PointCloud, read_pointcloud, write_pointcloud

torch.set_num_threads(2)


def _surface(h: int = 24, w: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 30.0
    z = 1.0 + 0.03 * np.sin(5 * xx + rng.uniform(0, 3)) * np.cos(4 * yy)
    cloud = np.stack([0.2 * xx, 0.2 * yy, z], axis=-1).astype(np.float32)
    cloud[:2, :4] = 0.0  # invalid points
    return cloud


def _inputs(folder: Path) -> Path:
    (folder / "part" / "xyz").mkdir(parents=True)
    organised = _surface()
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(folder / "part" / "xyz" / "000.tiff", organised)
    np.save(folder / "grid.npy", _surface(seed=1))
    flat = _surface(seed=2).reshape(-1, 3)
    flat = flat[(flat != 0).any(axis=1)]
    cloud = PointCloud(flat, attributes={"intensity": np.arange(len(flat), dtype=np.float32)})
    write_pointcloud(cloud, folder / "scan.ply", encoding="binary_big_endian")
    write_pointcloud(PointCloud(_surface(seed=3).reshape(-1, 3)[100:]), folder / "scan.pcd", encoding="ascii")
    return folder


def test_synth_writes_clouds_masks_previews_and_manifest(uad, tmp_path: Path) -> None:
    src = _inputs(tmp_path / "in")
    code, out, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--input", src, "--output", tmp_path / "a",
                         "--seed", "3", "--synthesizer.strength", "0.02", "--synthesizer.threshold", "0.6")
    assert code == 0, err
    assert "4 synthetic anomalies" in out and "previews/" in out
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["modality"] == "pointcloud" and manifest["synthesizer"]["reference"] == "plugin:pnas3d"
    assert manifest["options"] == {"strength": 0.02, "threshold": 0.6}
    items = {Path(item["source"]).name: item for item in manifest["items"]}
    assert sorted(item["cloud"] for item in manifest["items"]) == [
        "clouds/grid.npy", "clouds/part_xyz_000.tiff", "clouds/scan.pcd", "clouds/scan_ply.ply"]  # same stem: suffixed
    for name, item in items.items():
        source = read_pointcloud(next(src.rglob(name)))
        result = read_pointcloud(tmp_path / "a" / item["cloud"])
        mask = np.load(tmp_path / "a" / item["mask"])
        assert result.points.shape == source.points.shape and result.grid_shape == source.grid_shape
        assert mask.dtype == bool and mask.shape == (source.grid_shape or (source.n_points,))
        flat = mask.reshape(-1)
        assert flat.any() and np.array_equal(result.points[~flat], source.points[~flat])
        assert (result.points[flat] != source.points[flat]).any(axis=1).all()
        invalid = ~source.valid
        assert not flat[invalid].any() and np.array_equal(result.points[invalid], source.points[invalid])
        assert item["n_anomalous"] == int(flat.sum()) and item["n_valid"] == int(source.valid.sum())
        assert item["anomaly_fraction"] == round(float(flat[source.valid].mean()), 6)
        preview = Image.open(tmp_path / "a" / item["preview"])
        assert preview.format == "PNG" and preview.size[0] > 100
    assert items["scan.ply"]["grid_shape"] is None and items["000.tiff"]["grid_shape"] == [24, 30]
    ply = read_pointcloud(tmp_path / "a" / items["scan.ply"]["cloud"])
    assert ply.encoding == "binary_big_endian" and ply.attributes["intensity"][-1] == 711  # attributes kept
    assert read_pointcloud(tmp_path / "a" / items["scan.pcd"]["cloud"]).encoding == "ascii"


def test_synth_clouds_is_reproducible_with_count(uad, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "grid.npy", _surface())
    for name in ("a", "b"):
        code, _, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--input", src / "grid.npy",
                           "--output", tmp_path / name, "--seed", "5", "--count", "2")
        assert code == 0, err
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.npy"))
    assert [str(p) for p in files] == ["clouds/grid_00.npy", "clouds/grid_01.npy", "masks/grid_00_mask.npy",
                                       "masks/grid_01_mask.npy"]
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a" / "clouds" / "grid_00.npy").read_bytes() != (tmp_path / "a" / "clouds" /
                                                                       "grid_01.npy").read_bytes()
    seeds = [item["seed"] for item in json.loads((tmp_path / "a" / "manifest.json").read_text())["items"]]
    assert seeds == [5, 6]


def _truncated_ply(path: Path) -> None:
    write_pointcloud(PointCloud(_surface().reshape(-1, 3)), path)
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.parametrize(("name", "make", "message"), [
    ("empty.ply", lambda p: write_pointcloud(PointCloud(np.zeros((0, 3), np.float32)), p), "is empty"),
    ("zeros.npy", lambda p: np.save(p, np.zeros((10, 10, 3), np.float32)), "no valid points"),
    ("few.xyz", lambda p: p.write_text("0 0 1\n1 0 1\n0 1 1\n1 1 1.2\n2 1 1\n"), "at least 16 are needed"),
    ("nan.xyz", lambda p: p.write_text("\n".join(f"{i} {i % 7} 1" for i in range(40)) + "\nnan 1 1\n"),
     "NaN or infinite"),
    ("cut.ply", _truncated_ply, "truncated"),
    ("bad.pcd", lambda p: p.write_bytes(b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4\n"), "cannot read"),
    ("mesh.obj", lambda p: p.write_text("v 0 0 1\n"), "unknown point-cloud file extension"),
])
def test_bad_clouds_exit_2_with_a_clear_message(uad, tmp_path: Path, name: str, make, message: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    make(src / name)
    code, _, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--input", src / name, "--output", tmp_path / "o")
    assert code == 2 and err.startswith("error:") and message in err and name in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written temp folders


def test_nonfinite_invalid_keeps_nan_points_in_place_and_untouched(uad, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    grid = _surface()
    grid[5, 6] = np.nan
    grid[7, 8, 2] = np.inf
    np.save(src / "grid.npy", grid)
    code, _, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--input", src, "--output", tmp_path / "no")
    assert code == 2 and "NaN or infinite" in err and "--nonfinite invalid" in err
    code, _, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--input", src, "--output", tmp_path / "o",
                       "--nonfinite", "invalid")
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    item = manifest["items"][0]
    assert manifest["nonfinite"] == "invalid" and item["n_valid"] == 24 * 30 - 8 - 2
    out = np.load(tmp_path / "o" / item["cloud"])
    mask = np.load(tmp_path / "o" / item["mask"])
    assert out.shape == grid.shape and mask.shape == grid.shape[:2]
    for r, c in ((5, 6), (7, 8)):  # the non-finite points became invalid (0, 0, 0) points, never anomalous
        assert np.all(out[r, c] == 0) and not mask[r, c]
    code, _, err = uad("synth", "--synthesizer", "plugin:ecg_anomaly", "--input", src, "--output", tmp_path / "s",
                       "--nonfinite", "invalid")
    assert code == 2 and "applies to point clouds" in err


def test_folder_and_option_errors(uad, tmp_path: Path) -> None:
    (tmp_path / "pictures").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "pictures" / "a.png")
    code, _, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--input", tmp_path / "pictures",
                       "--output", tmp_path / "o")
    assert code == 2 and "no point clouds found" in err
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "grid.npy", _surface())
    code, _, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--synthesizer.threshold", "2", "--input", src,
                       "--output", tmp_path / "o")
    assert code == 2 and "threshold" in err
    code, _, err = uad("synth", "--synthesizer", "plugin:perlin", "--input", src, "--output", tmp_path / "o")
    assert code == 2 and "no images found" in err  # an image synthesizer does not read clouds
    assert not (tmp_path / "o").exists()


def test_a_half_written_output_is_removed_when_a_later_cloud_fails(uad, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "a_good.npy", _surface())
    (src / "b_bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\nproperty float x\n"
                                    b"property float y\nproperty float z\nend_header\n" + struct.pack("<3f", 1, 2, 3))
    code, _, err = uad("synth", "--synthesizer", "plugin:pnas3d", "--input", src, "--output", tmp_path / "o")
    assert code == 2 and "b_bad.ply" in err and "truncated" in err
    assert not (tmp_path / "o").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
