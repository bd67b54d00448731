"""Point-cloud files: every format and encoding round-trips, hand-written files parse, bad files fail clearly."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uad_plugins.data.pointcloud.io import (
    PointCloud,
    list_pointcloud_files,
    output_suffix,
    read_pointcloud,
    write_pointcloud,
)
from uad_plugins.errors import ConfigError, DataError

SHARED_3D = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _cloud(n: int = 50, dtype=np.float32, seed: int = 0) -> PointCloud:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)).astype(dtype)
    attributes = {"intensity": rng.random(n).astype(np.float32), "red": rng.integers(0, 255, n).astype(np.uint8)}
    return PointCloud(points, attributes=attributes)


def _organised(h: int = 6, w: int = 7) -> PointCloud:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    points = np.stack([xx, yy, 1.0 + 0.1 * xx * yy], axis=-1).astype(np.float32)
    points[0, :3] = 0  # invalid points keep their place
    return PointCloud(points)


@pytest.mark.parametrize(("suffix", "encoding"), [
    (".ply", "ascii"), (".ply", "binary_little_endian"), (".ply", "binary_big_endian"),
    (".pcd", "ascii"), (".pcd", "binary"), (".npy", None), (".xyz", None)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_roundtrip_every_format_and_encoding(tmp_path: Path, suffix: str, encoding: str | None, dtype) -> None:
    cloud = _cloud(dtype=dtype)
    path = write_pointcloud(cloud, tmp_path / f"c{suffix}", encoding=encoding)
    back = read_pointcloud(path)
    assert back.points.dtype == (dtype if suffix != ".xyz" else np.float64)
    # text has no types: float32 coordinates come back as float64 decimals that round to the same float32
    np.testing.assert_array_equal(back.points.astype(dtype), cloud.points)
    assert back.format == suffix[1:] and back.grid_shape is None
    if suffix in (".ply", ".pcd"):
        assert back.encoding == encoding
        assert set(back.attributes) == {"intensity", "red"}
        np.testing.assert_array_equal(back.attributes["intensity"], cloud.attributes["intensity"])
        np.testing.assert_array_equal(back.attributes["red"], cloud.attributes["red"])
        assert back.attributes["red"].dtype == np.uint8
    if suffix == ".xyz":  # extra columns come back as one [N, C] attribute
        np.testing.assert_allclose(back.attributes["extra"][:, 0], cloud.attributes["intensity"], rtol=1e-7)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


@pytest.mark.parametrize("suffix", [".pcd", ".npy", ".tiff"])
def test_organised_clouds_keep_their_grid_and_invalid_points(tmp_path: Path, suffix: str) -> None:
    cloud = _organised()
    back = read_pointcloud(write_pointcloud(cloud, tmp_path / f"o{suffix}"))
    assert back.grid_shape == (6, 7) and back.points.shape == (42, 3)
    np.testing.assert_array_equal(back.organised, cloud.organised)
    assert back.valid.reshape(6, 7)[0, :3].tolist() == [False] * 3 and back.valid.sum() == 39


def test_mvtec_style_xyz_tiff(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    xyz = np.random.default_rng(1).random((20, 30, 3)).astype(np.float32)
    xyz[:5] = 0.0  # background rows without measurements
    tifffile.imwrite(tmp_path / "000.tiff", xyz)
    cloud = read_pointcloud(tmp_path / "000.tiff")
    assert cloud.grid_shape == (20, 30) and cloud.points.dtype == np.float32
    np.testing.assert_array_equal(cloud.organised, xyz)
    assert cloud.valid.reshape(20, 30)[:5].sum() == 0 and cloud.valid.reshape(20, 30)[5:].all()
    assert output_suffix(cloud) == ".tiff"
    assert output_suffix(_cloud()) == ".ply" and output_suffix(read_pointcloud(
        write_pointcloud(_cloud(), tmp_path / "a.xyz"))) == ".xyz"


def test_tiff_without_tifffile_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "000.tiff", np.ones((4, 5, 3), np.float32))
    monkeypatch.setitem(sys.modules, "tifffile", None)  # as if it were not installed: PIL is tried
    with pytest.raises(DataError, match="tifffile"):
        read_pointcloud(tmp_path / "000.tiff")
    with pytest.raises(DataError, match="tifffile"):
        write_pointcloud(_organised(), tmp_path / "o.tiff")
    assert output_suffix(PointCloud(np.ones((4, 5, 3)), format="tiff")) == ".ply"


def test_handwritten_binary_big_endian_ply_with_faces_first(tmp_path: Path) -> None:
    header = (b"ply\nformat binary_big_endian 1.0\ncomment made by hand\nelement face 2\n"
              b"property list uchar int vertex_indices\nelement vertex 3\nproperty double x\nproperty double y\n"
              b"property double z\nproperty uchar label\nend_header\n")
    faces = struct.pack(">B3i", 3, 0, 1, 2) + struct.pack(">B4i", 4, 0, 1, 2, 0)
    verts = b"".join(struct.pack(">dddB", *v) for v in [(1, 2, 3, 7), (4, 5, 6, 8), (-1, 0.5, 1e-3, 9)])
    (tmp_path / "h.ply").write_bytes(header + faces + verts)
    cloud = read_pointcloud(tmp_path / "h.ply")
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6], [-1, 0.5, 1e-3]])
    assert cloud.points.dtype == np.float64 and cloud.attributes["label"].tolist() == [7, 8, 9]
    assert cloud.encoding == "binary_big_endian"


def test_handwritten_ascii_ply_and_pcd(tmp_path: Path) -> None:
    (tmp_path / "a.ply").write_bytes(
        b"ply\r\nformat ascii 1.0\r\nelement vertex 2\r\nproperty float x\r\nproperty float y\r\nproperty float z\r\n"
        b"element face 1\r\nproperty list uchar int vertex_indices\r\nend_header\r\n1 2 3\r\n4 5 6\r\n3 0 1 1\r\n")
    np.testing.assert_array_equal(read_pointcloud(tmp_path / "a.ply").points, [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "a.pcd").write_text(
        "# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nWIDTH 2\nHEIGHT 2\n"
        "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 4\nDATA ascii\n1 2 3 10\n4 5 6 11\nnan nan nan 0\n7 8 9 12\n")
    with pytest.raises(DataError, match="NaN or infinite"):
        read_pointcloud(tmp_path / "a.pcd")
    cloud = read_pointcloud(tmp_path / "a.pcd", nonfinite="invalid")
    assert cloud.grid_shape == (2, 2) and cloud.valid.tolist() == [True, True, False, True]
    assert cloud.attributes["rgb"].tolist() == [10, 11, 0, 12] and cloud.points[2].tolist() == [0, 0, 0]


def test_handwritten_binary_pcd_with_padding_and_multi_count_fields(tmp_path: Path) -> None:
    header = (b"VERSION .7\nFIELDS x y z _ normal\nSIZE 4 4 4 1 4\nTYPE F F F U F\nCOUNT 1 1 1 4 3\nWIDTH 2\n"
              b"HEIGHT 1\nPOINTS 2\nDATA binary\n")
    body = struct.pack("<3f4B3f", 1, 2, 3, 0, 0, 0, 0, 0, 0, 1) + struct.pack("<3f4B3f", 4, 5, 6, 0, 0, 0, 0, 1, 0, 0)
    (tmp_path / "b.pcd").write_bytes(header + body)
    cloud = read_pointcloud(tmp_path / "b.pcd")
    assert cloud.points.tolist() == [[1, 2, 3], [4, 5, 6]] and set(cloud.attributes) == {"normal"}
    assert cloud.attributes["normal"].tolist() == [[0, 0, 1], [1, 0, 0]]
    back = read_pointcloud(write_pointcloud(cloud, tmp_path / "b.ply"))  # [N, 3] attribute -> normal_0..2
    assert back.attributes["normal_2"].tolist() == [1, 0]


def test_xyz_comments_and_commas(tmp_path: Path) -> None:
    (tmp_path / "c.xyz").write_text("# x y z\n1,2,3\n\n4 5 6\n// end\n")
    assert read_pointcloud(tmp_path / "c.xyz").points.tolist() == [[1, 2, 3], [4, 5, 6]]


def _truncate(path: Path, keep: int) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - keep])
    return path


@pytest.mark.parametrize(("name", "make", "message"), [
    ("a.obj", lambda p: p.write_text("v 1 2 3\n"), "unknown point-cloud file extension"),
    ("noext", lambda p: p.write_text("1 2 3\n"), "unknown point-cloud file extension"),
    ("t.ply", lambda p: _truncate(write_pointcloud(_cloud(), p), 10), "truncated"),
    ("t2.ply", lambda p: _truncate(write_pointcloud(_cloud(), p, encoding="ascii"), 200), "truncated"),
    ("t.pcd", lambda p: _truncate(write_pointcloud(_cloud(), p), 1), "truncated"),
    ("h.ply", lambda p: p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n"), "end_header"),
    ("g.ply", lambda p: p.write_bytes(b"\x89PNG garbage"), "does not start with 'ply'"),
    ("v.ply", lambda p: p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n"),
     "no x, y, z"),
    ("c.pcd", lambda p: p.write_bytes(b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nPOINTS 1\n"
                                      b"DATA binary_compressed\n\x00\x00"), "binary_compressed"),
    ("s.npy", lambda p: np.save(p, np.zeros((4, 2))), "shape"),
    ("o.npy", lambda p: np.save(p, np.array(["a", "b", "c"])), "not coordinates"),
    ("p.npy", lambda p: p.write_bytes(b"\x93NUMPY garbage"), "cannot read"),
    ("x.npy", lambda p: p.write_bytes(b"not numpy at all"), "no NumPy header"),  # not numpy's unpickling advice
    ("r.xyz", lambda p: p.write_text("1 2 3\n4 5\n"), "columns changed from 3 to 2"),
    ("q.xyz", lambda p: p.write_text("1 2\n4 5\n"), "2 columns"),
    ("n.xyz", lambda p: p.write_text("1 2 3\nnan 5 6\ninf 1 1\n"), "2 of 3 points have NaN"),
    ("b.tiff", lambda p: p.write_bytes(b"II*\x00" + b"\x00" * 20), "cannot read"),
    ("rgb.tiff", lambda p: __import__("tifffile").imwrite(p, np.zeros((4, 4, 3), np.uint8)), "H x W x 3 floats"),
])
def test_bad_files_raise_a_clear_data_error(tmp_path: Path, name: str, make, message: str) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(DataError, match=message) as info:
        read_pointcloud(path)
    assert str(path) in str(info.value)


def test_missing_file_folder_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_pointcloud(tmp_path / "nope.ply")
    (tmp_path / "dir.ply").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        read_pointcloud(tmp_path / "dir.ply")
    with pytest.raises(ConfigError, match="nonfinite"):
        read_pointcloud(tmp_path / "nope.ply", nonfinite="drop")
    with pytest.raises(ConfigError, match="encodings"):
        write_pointcloud(_cloud(), tmp_path / "x.pcd", encoding="binary_compressed")
    with pytest.raises(DataError, match="must be organised"):
        write_pointcloud(_cloud(), tmp_path / "x.tiff")
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob(".x.*"))
    with pytest.raises(DataError, match="expected"):
        PointCloud(np.zeros((4, 2)))
    with pytest.raises(DataError, match="grid_shape"):
        PointCloud(np.zeros((6, 3)), grid_shape=(2, 2))


def test_empty_cloud_files_read_as_empty(tmp_path: Path) -> None:
    (tmp_path / "e.xyz").write_text("")
    write_pointcloud(PointCloud(np.zeros((0, 3), np.float32)), tmp_path / "e.ply")
    for name in ("e.xyz", "e.ply"):
        assert read_pointcloud(tmp_path / name).n_points == 0


def test_list_pointcloud_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "xyz").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in ("a/xyz/000.tiff", "a/xyz/001.TIF", "b.ply", "c.pcd", "notes.txt", "a/rgb.png", ".hidden/x.ply"):
        (tmp_path / rel).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in list_pointcloud_files(tmp_path)]
    assert found == ["a/xyz/000.tiff", "a/xyz/001.TIF", "b.ply", "c.pcd"]
    assert list_pointcloud_files(tmp_path / "b.ply") == [tmp_path / "b.ply"]
    with pytest.raises(DataError, match="unknown point-cloud file extension"):
        list_pointcloud_files(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="does not exist"):
        list_pointcloud_files(tmp_path / "missing")


def test_io_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys, numpy as np\n"
            "from uad_plugins.data.pointcloud import PointCloud, read_pointcloud, write_pointcloud, PointCloudBatch\n"
            f"p = write_pointcloud(PointCloud(np.ones((5, 3))), {str(tmp_path / 'x.ply')!r})\n"
            "assert read_pointcloud(p).n_points == 5\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _mvtec3d_tiffs() -> list[Path]:
    return sorted(SHARED_3D.glob("mvtec_3d*/**/xyz/*.tiff"))[:1] if SHARED_3D.is_dir() else []


@pytest.mark.shared_data
def test_real_mvtec_3d_ad_tiff_if_present(tmp_path: Path) -> None:
    files = _mvtec3d_tiffs()
    if not files:
        pytest.skip("no MVTec 3D-AD xyz TIFF under shared/data/mvtec_3d*")
    cloud = read_pointcloud(files[0])
    assert cloud.grid_shape is not None and 0 < cloud.valid.sum() < cloud.n_points
    back = read_pointcloud(write_pointcloud(cloud, tmp_path / "copy.tiff"))
    np.testing.assert_array_equal(back.points, cloud.points)
