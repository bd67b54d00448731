"""Hostile input files: a .npy/.npz/.tiff header is checked against the bytes the file holds before anything is
allocated; symbolic-link loops, broken links and pipes are named errors in every listing, never skipped or crashed
on. The shared helpers live in uad_edge.signals (torch-free); the core readers raise DataError with them."""

from __future__ import annotations

import io
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from uad_edge.errors import EdgeError
from uad_edge.files import find_files, npy_header, path_problem, read_npy
from uad_edge.signals import list_signal_files, read_signal_file
from uad_plugins.errors import DataError

HUGE = (10**9, 256)  # 954 GiB of float32


def _npy(path: Path, shape: tuple[int, ...], descr: str = "<f4", data: bytes = b"\0" * 1024, *,
         fortran: bool = False, version: tuple[int, int] = (2, 0)) -> Path:
    """A .npy file with a real header claiming ``shape`` and ``descr``, followed by ``data``."""
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    with open(path, "wb") as fh:
        if version == (1, 0):
            np.lib.format.write_array_header_1_0(fh, header)
        else:
            np.lib.format.write_array_header_2_0(fh, header)
        fh.write(data)
    return path


def _message(info: pytest.ExceptionInfo) -> str:
    return info.value.render()


# ------------------------------------------------------------------------------------------------ good files
@pytest.mark.parametrize("array", [
    pytest.param(np.arange(12, dtype=np.float32).reshape(3, 4), id="float32"),
    pytest.param(np.arange(24, dtype=">f8").reshape(2, 3, 4), id="big-endian"),
    pytest.param(np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)), id="fortran"),
    pytest.param(np.arange(5, dtype=np.int16), id="int16"),
    pytest.param(np.array([True, False]), id="bool"),
    pytest.param(np.float64(3.5), id="scalar"),
    pytest.param(np.zeros((0, 64), np.float32), id="empty"),
])
def test_good_files_load_like_numpy(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "a.npy"
    np.save(path, array)
    loaded = read_npy(path)
    expected = np.load(path, allow_pickle=False)
    assert loaded.dtype == expected.dtype and loaded.shape == expected.shape
    np.testing.assert_array_equal(loaded, expected)
    assert loaded.flags.writeable
    shape, fortran, dtype = npy_header(path)
    assert shape == expected.shape and dtype == expected.dtype
    assert fortran == (array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous)


def test_version_1_header_loads(tmp_path: Path) -> None:
    values = np.arange(6, dtype="<f4")
    path = _npy(tmp_path / "v1.npy", (2, 3), data=values.tobytes(), version=(1, 0))
    np.testing.assert_array_equal(read_npy(path), values.reshape(2, 3))


# ------------------------------------------------------------------------------------------------ bad files
def test_a_huge_claim_is_refused_before_allocating(tmp_path: Path) -> None:
    path = _npy(tmp_path / "huge.npy", HUGE)
    start = time.perf_counter()
    with pytest.raises(EdgeError) as info:
        read_npy(path)
    assert time.perf_counter() - start < 1.0
    text = _message(info)
    assert str(path) in text and "(1000000000, 256)" in text and "1,024,000,000,000 bytes" in text
    assert "truncated or its header is wrong" in text and "1,024 bytes" in text
    with pytest.raises(EdgeError, match="header is wrong"):
        npy_header(path)


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"garbage"), "corrupt NumPy header",
                 id="corrupt-header"),
    pytest.param(lambda p: p.write_bytes(b"not numpy at all"), "no NumPy header", id="not-npy"),
    pytest.param(lambda p: p.write_bytes(b""), "no NumPy header", id="zero-bytes"),
    pytest.param(lambda p: p.write_bytes(b"\x93NUM"), "no NumPy header", id="short-magic"),
    pytest.param(lambda p: p.write_bytes(np.lib.format.magic(3, 0) + b"\0" * 40), "format version 3.0",
                 id="version-3"),
    pytest.param(lambda p: p.write_bytes(b"\x93NUMPY garbage"), "format version 32.103", id="bad-version"),
    pytest.param(lambda p: _npy(p, (-3,)), "corrupt NumPy header", id="negative-shape"),
    pytest.param(lambda p: _npy(p, (4,), "<U3", data=b"\0" * 48), "holds <U3 values, not numbers", id="text"),
    pytest.param(lambda p: _npy(p, (2,), [("a", "<f8")], data=b"\0" * 16), "not numbers", id="structured"),
    pytest.param(lambda p: _npy(p, (3,), "<f8", data=b"\0" * 24 + b"tail"), "4 bytes after", id="trailing"),
    pytest.param(lambda p: _npy(p, (3,), "<f8", data=b"\0" * 23), "only 23 bytes follow", id="short-data"),
])
def test_bad_files_are_named_errors(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "x.npy"
    make(path)
    with pytest.raises(EdgeError) as info:
        read_npy(path)
    assert message in _message(info) and str(path) in _message(info)
    assert "allow_pickle" not in _message(info)  # numpy's advice to unpickle is never passed on


def test_truncated_copy_of_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    np.save(path, np.ones((10, 64), np.float32))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(EdgeError, match=r"\(10, 64\) \(2,560 bytes\), but only 2,460 bytes follow"):
        read_npy(path)


def test_a_long_header_is_refused_without_pickle_advice(tmp_path: Path) -> None:
    path = tmp_path / "long.npy"
    text = ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), " + " " * 20000 + "}\n").encode("latin1")
    path.write_bytes(np.lib.format.magic(2, 0) + len(text).to_bytes(4, "little") + text + b"\0" * 4)
    with pytest.raises(EdgeError, match="longer than 10000 bytes") as info:
        read_npy(path)
    assert "allow_pickle" not in _message(info)


class _Trap:
    """Unpickling it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "o.npy"
    payload = pickle.dumps(np.array([_Trap(marker)], dtype=object), protocol=4)
    _npy(path, (1,), "|O", data=payload)
    for reader in (lambda: read_npy(path), lambda: npy_header(path),
                   lambda: read_npy(path, kinds="biufcO")):
        with pytest.raises(EdgeError, match="Python objects") as info:
            reader()
        assert str(path) in _message(info)
    assert not marker.exists()


def test_kinds_restrict_the_dtype(tmp_path: Path) -> None:
    path = tmp_path / "i.npy"
    np.save(path, np.arange(4, dtype=np.int32))
    with pytest.raises(EdgeError, match="holds int32 values, not floats"):
        read_npy(path, kinds="f", what="floats")
    with pytest.raises(DataError, match="it holds int32 values"):
        read_npy(path, kinds="f", name="it", error=DataError)


def test_folders_pipes_and_links_are_refused_without_opening(tmp_path: Path) -> None:
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(EdgeError, match="is a folder, not a file"):
        read_npy(tmp_path / "dir.npy")
    with pytest.raises(EdgeError, match="does not exist"):
        read_npy(tmp_path / "missing.npy")
    os.symlink("loop_b.npy", tmp_path / "loop_a.npy")
    os.symlink("loop_a.npy", tmp_path / "loop_b.npy")
    with pytest.raises(EdgeError, match=r"loop_a\.npy is a symbolic-link loop"):
        read_npy(tmp_path / "loop_a.npy")
    os.symlink("gone.npy", tmp_path / "broken.npy")
    with pytest.raises(EdgeError, match=r"broken\.npy is a broken symbolic link"):
        read_npy(tmp_path / "broken.npy")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.npy")
        start = time.perf_counter()
        with pytest.raises(EdgeError, match=r"pipe\.npy is not a regular file"):
            read_npy(tmp_path / "pipe.npy")  # never waits for a writer
        assert time.perf_counter() - start < 1.0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "secret.npy"
    np.save(path, np.zeros(3))
    path.chmod(0)
    try:
        with pytest.raises(EdgeError, match=r"secret\.npy cannot be opened"):
            read_npy(path)
    finally:
        path.chmod(0o600)


# ------------------------------------------------------------------------------------------------ listings
def test_path_problem(tmp_path: Path) -> None:
    (tmp_path / "f.npy").write_bytes(b"x")
    os.symlink("f.npy", tmp_path / "link.npy")
    os.symlink("nowhere", tmp_path / "broken")
    os.symlink("self", tmp_path / "self")
    assert path_problem(tmp_path / "f.npy") is None and path_problem(tmp_path / "link.npy") is None
    assert path_problem(tmp_path) == "is a folder, not a file"
    assert path_problem(tmp_path / "nope") == "does not exist"
    assert path_problem(tmp_path / "f.npy" / "below") == "does not exist"
    assert path_problem(tmp_path / "broken") == "is a broken symbolic link (its target nowhere does not exist)"
    assert path_problem(tmp_path / "self") == "is a symbolic-link loop"


def test_find_files_lists_like_rglob(tmp_path: Path) -> None:
    for name in ("b/2.npy", "a/1.npy", "a/z.csv", "top.NPY", ".hidden/h.npy", "a/.h.npy", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "a" / "1.npy", tmp_path / "b" / "link.npy")  # a link to a file is followed
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere"
    elsewhere.mkdir()
    (elsewhere / "out.npy").write_bytes(b"x")
    os.symlink(elsewhere, tmp_path / "linked_folder")  # a link to a folder is not followed
    os.symlink("missing", tmp_path / "broken.txt")  # an unwanted extension: ignored
    expected = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.suffix.lower() in (".npy", ".csv")
                      and not any(part.startswith(".") for part in p.relative_to(tmp_path).parts))
    assert find_files(tmp_path, (".npy", ".csv")) == expected
    assert tmp_path / "b" / "link.npy" in expected and len(expected) == 5
    assert tmp_path / ".hidden" / "h.npy" in find_files(tmp_path, (".npy",), hidden=True)
    assert tmp_path / "notes.txt" in find_files(tmp_path, None)


@pytest.mark.parametrize(("make", "name", "message"), [
    pytest.param(lambda d: os.symlink(".", d / "loop"), "loop", "is a symbolic-link loop (a link to", id="dot"),
    pytest.param(lambda d: os.symlink("..", d / "sub" / "up"), "up", "is a symbolic-link loop (a link to",
                 id="parent"),
    pytest.param(lambda d: (os.symlink("b", d / "a"), os.symlink("a", d / "b")), "a", "is a symbolic-link loop",
                 id="pair"),
    pytest.param(lambda d: os.symlink("y.npy", d / "sub" / "y.npy"), "y.npy", "is a symbolic-link loop", id="self"),
    pytest.param(lambda d: os.symlink("gone.npy", d / "b.npy"), "b.npy", "is a broken symbolic link", id="broken"),
    pytest.param(lambda d: os.symlink(d / "sub", d / "dir.npy"), "dir.npy", "is a link to a folder", id="dir-link"),
    pytest.param(lambda d: os.mkfifo(d / "p.npy"), "p.npy", "is not a regular file", id="pipe",
                 marks=pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")),
])
def test_listings_name_loops_and_broken_links(tmp_path: Path, make, name: str, message: str) -> None:
    from uad_plugins.data.checks import list_image_files
    from uad_plugins.data.pointcloud.io import list_pointcloud_files
    from uad_plugins.data.signals.io import list_files

    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "good.npy", np.zeros((2, 64), np.float32))
    make(tmp_path)
    for lister in (lambda: find_files(tmp_path, (".npy",)), lambda: list_signal_files([tmp_path])):
        with pytest.raises(EdgeError) as info:
            lister()
        assert f"{name} {message}" in _message(info)
    for lister in (lambda: list_files(tmp_path, (".npy", ".csv"), "input"), lambda: list_pointcloud_files(tmp_path)):
        with pytest.raises(DataError) as data_info:
            lister()
        assert f"{name} {message}" in data_info.value.render()
    if not name.endswith(".npy"):  # loops are errors whatever their name
        with pytest.raises(DataError, match="symbolic-link loop"):
            list_image_files(tmp_path)


def test_an_unreadable_input_given_directly_is_named(tmp_path: Path) -> None:
    from uad_plugins.data.checks import check_image_file, list_image_files
    from uad_plugins.data.pointcloud.io import list_pointcloud_files, read_pointcloud
    from uad_plugins.data.signals.io import list_files, read_array_file

    os.symlink("b.npy", tmp_path / "a.npy")
    os.symlink("a.npy", tmp_path / "b.npy")
    loop = tmp_path / "a.npy"
    for call in (lambda: list_files(loop, (".npy",), "input"), lambda: read_array_file(loop, 1),
                 lambda: list_pointcloud_files(loop), lambda: read_pointcloud(loop), lambda: list_image_files(loop),
                 lambda: check_image_file(loop)):
        with pytest.raises(DataError, match="symbolic-link loop") as info:
            call()
        assert "a.npy" in info.value.render()
    for call in (lambda: list_signal_files([loop]), lambda: read_signal_file(loop, (1, 64))):
        with pytest.raises(EdgeError, match=r"a\.npy is a symbolic-link loop"):
            call()


# ------------------------------------------------------------------------------------------------ core readers
def test_core_signal_reader_checks_headers_and_empty_arrays(tmp_path: Path) -> None:
    from uad_plugins.data.signals.io import read_array_file

    start = time.perf_counter()
    with pytest.raises(DataError, match="header is wrong") as info:
        read_array_file(_npy(tmp_path / "huge.npy", HUGE), 1)
    assert time.perf_counter() - start < 1.0 and "huge.npy" in info.value.render()
    for shape in ((0, 64), (0, 1, 64)):
        np.save(tmp_path / "empty.npy", np.zeros(shape, np.float32))
        with pytest.raises(DataError, match=r"empty.npy holds no samples \(an array of shape \(0,"):
            read_array_file(tmp_path / "empty.npy", 1)
    np.save(tmp_path / "size0.npy", np.zeros(0, np.float32))
    with pytest.raises(DataError, match=r"size0\.npy holds samples of length 0"):
        read_array_file(tmp_path / "size0.npy", 1)
    np.save(tmp_path / "complex.npy", np.zeros((2, 64), np.complex64))
    with pytest.raises(DataError, match="holds complex64 values, not numbers"):
        read_array_file(tmp_path / "complex.npy", 1)
    np.save(tmp_path / "ints.npy", np.arange(128, dtype=np.int16).reshape(2, 64))  # SignalFolder reads numbers
    assert read_array_file(tmp_path / "ints.npy", 1).shape == (2, 1, 64)


def test_edge_signal_reader_takes_floats_only(tmp_path: Path) -> None:
    np.save(tmp_path / "ints.npy", np.arange(128, dtype=np.int16).reshape(2, 64))
    with pytest.raises(EdgeError, match=r"ints\.npy holds int16 values; the bundle takes float32 signals"):
        read_signal_file(tmp_path / "ints.npy", (1, 64))
    np.save(tmp_path / "flags.npy", np.zeros((2, 64), bool))
    with pytest.raises(EdgeError, match="holds bool values"):
        read_signal_file(tmp_path / "flags.npy", (1, 64))
    np.save(tmp_path / "empty.npy", np.zeros((0, 64), np.float32))
    with pytest.raises(EdgeError, match=r"empty\.npy holds no windows"):
        read_signal_file(tmp_path / "empty.npy", (1, 64))
    with pytest.raises(EdgeError, match="header is wrong"):
        read_signal_file(_npy(tmp_path / "huge.npy", HUGE), (1, 64))
    np.save(tmp_path / "ok.npy", np.ones((3, 64), np.float64))
    assert read_signal_file(tmp_path / "ok.npy", (1, 64)).shape == (3, 1, 64)


def _npz_with(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _npy_bytes(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_2_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def test_npz_records_are_checked_member_by_member(tmp_path: Path) -> None:
    from uad_plugins.data.signals.io import read_mitbih_npz, read_record_leads

    good = tmp_path / "100.npz"
    np.savez_compressed(good, ecg_adc=np.arange(2000, dtype=np.int16), fs=np.array(360.0),
                        r_peaks=np.array([100, 900]), lead=np.array(["MLII"]))
    assert read_mitbih_npz(good).signal.shape == (1, 2000) and read_record_leads(good) == ["MLII"]
    huge = _npz_with(tmp_path / "huge.npz", {"ecg_adc.npy": _npy_bytes((10**12,), "<i2", b"\0" * 64),
                                             "fs.npy": _npy_bytes((), "<f8", b"\0" * 8)})
    with pytest.raises(DataError) as info:
        read_mitbih_npz(huge)
    assert "huge.npz (array 'ecg_adc')" in info.value.render() and "header is wrong" in info.value.render()
    marker = tmp_path / "unpickled"
    objects = _npz_with(tmp_path / "obj.npz", {"lead.npy": _npy_bytes((1,), "|O", pickle.dumps(
        np.array([_Trap(marker)], dtype=object), protocol=4))})
    with pytest.raises(DataError, match="Python objects"):
        read_record_leads(objects)
    assert not marker.exists()
    with pytest.raises(DataError, match="cannot be read as an npz record"):
        read_mitbih_npz(_npy(tmp_path / "plain.npz", (3,), "<f8", b"\0" * 24))  # a .npy named .npz
    bomb = tmp_path / "bomb.npz"  # a deflated member claiming far more than deflate can expand to
    _npz_with(bomb, {"ecg_adc.npy": _npy_bytes((1000,), "<i2", b"\0" * 2000)}, zipfile.ZIP_DEFLATED)
    data = bytearray(bomb.read_bytes())
    info_ = zipfile.ZipFile(bomb).infolist()[0]
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (2**31).to_bytes(4, "little")  # the central directory's uncompressed size
    bomb.write_bytes(bytes(data))
    assert info_.file_size < 2**31
    with pytest.raises(DataError, match="claims 2,147,483,648 bytes"):
        read_mitbih_npz(bomb)


# ------------------------------------------------------------------------------------------------ point clouds
def test_pointcloud_npy_and_tiff_headers(tmp_path: Path) -> None:
    from uad_plugins.data.pointcloud.io import read_pointcloud

    with pytest.raises(DataError) as info:
        read_pointcloud(_npy(tmp_path / "huge.npy", (10**9, 3)))
    text = info.value.render()
    assert "cannot read" in text and "huge.npy" in text and "header is wrong" in text
    np.save(tmp_path / "ok.npy", np.ones((5, 3), np.float32))
    assert read_pointcloud(tmp_path / "ok.npy").n_points == 5
    tifffile = pytest.importorskip("tifffile")
    small = tmp_path / "small.tiff"
    tifffile.imwrite(small, np.ones((4, 4, 3), np.float32), photometric="rgb")
    assert read_pointcloud(small).grid_shape == (4, 4)
    with tifffile.TiffFile(small) as tif:
        page = tif.pages[0]
        offsets = page.tags["ImageWidth"].valueoffset, page.tags["ImageLength"].valueoffset
        kind = page.tags["ImageWidth"].dtype
    data = bytearray(small.read_bytes())
    width = 2 if int(kind) == 3 else 4  # SHORT or LONG
    for offset in offsets:
        data[offset:offset + width] = (60000).to_bytes(width, "little")
    (tmp_path / "huge.tiff").write_bytes(bytes(data))
    start = time.perf_counter()
    with pytest.raises(DataError, match="header is wrong") as info:
        read_pointcloud(tmp_path / "huge.tiff")
    assert time.perf_counter() - start < 2.0 and "huge.tiff" in info.value.render()
