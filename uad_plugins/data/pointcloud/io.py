"""Point-cloud files: PLY, PCD, NPY, XYZ and MVTec 3D-AD organised ``xyz`` TIFFs (numpy only, never torch).

Conventions used everywhere in :mod:`uad_plugins.data.pointcloud`:

- ``points`` is ``[N, 3]`` float32 or float64 (integer coordinates are read as float64);
- an **invalid point** is ``(0, 0, 0)``, as in MVTec 3D-AD's ``xyz`` TIFFs; invalid points keep their place;
- an **organised** cloud has ``grid_shape = (H, W)`` and its points in row-major order, so any per-point array
  reshapes back to ``H x W``;
- non-finite coordinates (NaN, inf) are an error by default; ``nonfinite="invalid"`` turns such points into
  invalid ``(0, 0, 0)`` points instead (organised PCD files from sensors mark missing pixels with NaN).

Formats (read and write): ``.ply`` (ascii, binary little/big endian; the vertex element's scalar properties),
``.pcd`` (ascii, binary; ``binary_compressed`` is refused with a hint), ``.npy`` (``[N, 3]`` or ``[H, W, 3]``),
``.xyz`` (whitespace-separated text, three or more columns) and ``.tif``/``.tiff`` (``H x W x 3`` float; read with
``tifffile`` when installed, else PIL; written with ``tifffile``). Vertex properties besides x, y, z (colours,
normals, intensities) are kept in :attr:`PointCloud.attributes` and written back where the format can hold them;
other PLY elements (faces) are not kept.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from uad_edge.atomic import atomic_open
from uad_edge.files import find_files, path_problem, read_npy
from uad_plugins.errors import ConfigError, DataError

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "PointCloud",
    "list_pointcloud_files",
    "output_suffix",
    "read_pointcloud",
    "tiff_writable",
    "write_pointcloud",
]

#: file suffix -> format name
SUFFIXES: dict[str, str] = {".ply": "ply", ".pcd": "pcd", ".npy": "npy", ".xyz": "xyz", ".tif": "tiff",
                            ".tiff": "tiff"}
#: format name -> encodings it can be written with (first = default)
FORMATS: dict[str, tuple[str, ...]] = {
    "ply": ("binary_little_endian", "binary_big_endian", "ascii"),
    "pcd": ("binary", "ascii"),
    "npy": ("binary",),
    "xyz": ("ascii",),
    "tiff": ("binary",),
}
_KNOWN = ", ".join(sorted(SUFFIXES))
_READ_ERRORS = (ValueError, TypeError, IndexError, KeyError, EOFError, OSError, struct.error, UnicodeDecodeError,
                OverflowError)


class _BadFileError(Exception):
    """A file that does not follow its format; turned into a DataError naming the file."""

    def __init__(self, message: str, hint: str | None = None) -> None:  # the shared .npy check passes a hint
        del hint
        super().__init__(message)


@dataclass
class PointCloud:
    """A point cloud read from or written to a file.

    Attributes:
        points: ``[N, 3]`` float32/float64 coordinates; ``(0, 0, 0)`` marks an invalid point.
        grid_shape: ``(H, W)`` for an organised cloud (points in row-major order), else ``None``.
        attributes: other per-point fields, ``name -> [N]`` or ``[N, C]`` arrays, kept in point order.
        format: the file format it came from (``ply``, ``pcd``, ``npy``, ``xyz``, ``tiff``) or ``None``.
        encoding: ``ascii``/``binary_little_endian``/``binary_big_endian`` (PLY), ``ascii``/``binary`` (PCD).
        source: the file it was read from.
    """

    points: np.ndarray
    grid_shape: tuple[int, int] | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    format: str | None = None
    encoding: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.points)
        if pts.ndim == 3 and pts.shape[-1] == 3 and self.grid_shape is None:
            self.grid_shape = (int(pts.shape[0]), int(pts.shape[1]))
        pts = pts.reshape(-1, 3) if pts.ndim == 3 and pts.shape[-1] == 3 else pts
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise DataError(f"point cloud{self._where()} has shape {tuple(np.shape(self.points))}; "
                            "expected [N, 3] or organised [H, W, 3].")
        if pts.dtype.kind in "iub":
            pts = pts.astype(np.float64)
        elif pts.dtype.kind != "f":
            raise DataError(f"point cloud{self._where()} has coordinates of type {pts.dtype}; expected numbers.")
        elif pts.dtype not in (np.float32, np.float64):
            pts = pts.astype(np.float64)
        self.points = pts
        if self.grid_shape is not None:
            h, w = (int(v) for v in self.grid_shape)
            if h * w != len(pts):
                raise DataError(f"point cloud{self._where()}: grid_shape {h}x{w} does not match {len(pts)} points.")
            self.grid_shape = (h, w)
        for name, value in list(self.attributes.items()):
            value = np.asarray(value)
            if len(value) != len(pts) or value.ndim not in (1, 2):
                raise DataError(f"point cloud{self._where()}: attribute {name!r} has shape {value.shape}; "
                                f"expected [{len(pts)}] or [{len(pts)}, C].")
            self.attributes[name] = value

    def _where(self) -> str:
        return f" {self.source}" if self.source else ""

    @property
    def valid(self) -> np.ndarray:
        """``[N]`` bool: finite and not ``(0, 0, 0)``."""
        return np.isfinite(self.points).all(axis=1) & (self.points != 0).any(axis=1)

    @property
    def n_points(self) -> int:
        """Number of points, invalid ones included."""
        return len(self.points)

    @property
    def organised(self) -> np.ndarray:
        """The points as ``[H, W, 3]`` (organised clouds only)."""
        if self.grid_shape is None:
            raise ConfigError(f"point cloud{self._where()} is not organised (no grid_shape).")
        return self.points.reshape(*self.grid_shape, 3)

    def with_points(self, points: np.ndarray) -> PointCloud:
        """A copy with new coordinates (same order, grid, attributes and format)."""
        pts = np.asarray(points).reshape(-1, 3)
        if len(pts) != self.n_points:
            raise DataError(f"new points have {len(pts)} rows, the cloud has {self.n_points}.")
        return replace(self, points=pts.astype(self.points.dtype, copy=False),
                       attributes=dict(self.attributes))


# ----------------------------------------------------------------------------------------------- reading
def list_pointcloud_files(path: str | os.PathLike[str]) -> list[Path]:
    """The point-cloud files at ``path``: the file itself, or every known file under a folder (recursive, sorted).

    Raises DataError when ``path`` does not exist or is a file with an unknown extension, and for a symbolic-link
    loop, broken link or unlistable folder under it (named, never skipped); a folder without point clouds gives an
    empty list.
    """
    target = Path(path)
    if not target.is_dir() and not target.is_file():
        raise DataError(f"{target} {path_problem(target) or 'cannot be read'}.",
                        hint=f"Give a point-cloud file ({_KNOWN}) or a folder of them.")
    if target.is_file():
        _format_of(target)
        return [target]
    return find_files(target, SUFFIXES, error=DataError)


def _format_of(path: Path) -> str:
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown point-cloud file extension {path.suffix or '(none)'!r}.",
                        hint=f"Known extensions: {_KNOWN}. Convert the file, or rename it if it is one of these.")
    return fmt


def read_pointcloud(path: str | os.PathLike[str], *, nonfinite: str = "error") -> PointCloud:
    """Read a point cloud; the format comes from the extension.

    Args:
        path: a ``.ply``, ``.pcd``, ``.npy``, ``.xyz``, ``.tif`` or ``.tiff`` file.
        nonfinite: ``"error"`` (default) raises DataError on NaN/inf coordinates; ``"invalid"`` turns those
            points into invalid ``(0, 0, 0)`` points.

    Raises:
        DataError: missing file, unknown extension, corrupt or truncated file, non-finite coordinates.

    Example:
        >>> cloud = read_pointcloud("bagel/test/crack/xyz/000.tiff")   # doctest: +SKIP
        >>> cloud.grid_shape, cloud.points.shape, int(cloud.valid.sum())   # doctest: +SKIP
        ((800, 800), (640000, 3), 171231)
    """
    if nonfinite not in ("error", "invalid"):
        raise ConfigError(f"nonfinite must be 'error' or 'invalid', got {nonfinite!r}.")
    path = Path(path)
    fmt = _format_of(path)
    if (problem := path_problem(path)) is not None:
        raise DataError(f"point-cloud file {path} {problem}.", hint="Check the path.")
    reader = _READERS[fmt]
    try:
        cloud = reader(path)
    except (_BadFileError, *_READ_ERRORS) as exc:
        raise DataError(f"cannot read {path} as a {fmt.upper()} point cloud: {exc}",
                        hint="The file is corrupt, truncated or not in that format: re-export it, or remove it.") \
            from exc
    cloud.source = str(path)
    cloud.format = fmt
    bad = ~np.isfinite(cloud.points).all(axis=1)
    if bad.any():
        if nonfinite == "error":
            first = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: {int(bad.sum())} of {cloud.n_points} points have NaN or infinite coordinates "
                            f"(the first is point {first}).",
                            hint="Mark missing points as (0, 0, 0), the invalid-point convention of MVTec 3D-AD, "
                                 "or treat them as invalid points: uad synth --nonfinite invalid, "
                                 "read_pointcloud(path, nonfinite='invalid').")
        cloud.points = cloud.points.copy()
        cloud.points[bad] = 0
    return cloud


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_PLY_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint", "f4": "float",
              "f8": "double"}
_PLY_ENCODINGS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


@dataclass
class _Element:
    name: str
    count: int
    props: list[tuple[str, str | tuple[str, str]]]  # (name, 'f4') or (name, ('u1', 'i4')) for a list property


def _split_header(data: bytes, end_marker: bytes) -> tuple[list[str], int]:
    """Header lines up to and including the line starting with ``end_marker``; offset where the body starts."""
    lines, offset = [], 0
    while True:
        nl = data.find(b"\n", offset)
        line = data[offset:] if nl < 0 else data[offset:nl]
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise _BadFileError("the header is not ASCII text") from exc
        lines.append(text)
        offset = len(data) if nl < 0 else nl + 1
        if text.startswith(end_marker.decode()):
            return lines, offset
        if nl < 0 or len(lines) > 10_000:
            raise _BadFileError(f"the header has no '{end_marker.decode()}' line")


def _read_ply(path: Path) -> PointCloud:
    data = path.read_bytes()
    if not data.startswith(b"ply"):
        raise _BadFileError("it does not start with 'ply'")
    lines, body = _split_header(data, b"end_header")
    encoding, elements = None, []
    for line in lines[1:-1]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            if len(words) < 2 or words[1] not in _PLY_ENCODINGS:
                raise _BadFileError(f"unknown format line {line!r}")
            encoding = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise _BadFileError(f"bad element line {line!r}")
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property":
            if not elements:
                raise _BadFileError("a property comes before any element")
            if len(words) == 5 and words[1] == "list" and words[2] in _PLY_TYPES and words[3] in _PLY_TYPES:
                elements[-1].props.append((words[4], (_PLY_TYPES[words[2]], _PLY_TYPES[words[3]])))
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1].props.append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise _BadFileError(f"bad property line {line!r}")
        else:
            raise _BadFileError(f"unknown header line {line!r}")
    if encoding is None:
        raise _BadFileError("the header has no format line")
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None:
        raise _BadFileError("it has no vertex element")
    if any(isinstance(t, tuple) for _, t in vertex.props):
        raise _BadFileError("its vertex element has list properties, which are not supported")
    names = [n for n, _ in vertex.props]
    if not {"x", "y", "z"} <= set(names):
        raise _BadFileError(f"its vertex element has no x, y, z properties (it has {names})")
    if len(set(names)) != len(names):
        raise _BadFileError(f"its vertex element repeats a property name ({names})")
    if encoding == "ascii":
        table = _ply_ascii_vertices(data[body:], elements, vertex)
    else:
        table = _ply_binary_vertices(data, body, elements, vertex, _PLY_ENCODINGS[encoding])
    return _cloud_from_table(table, names, None, "ply", encoding)


def _ply_ascii_vertices(body: bytes, elements: list[_Element], vertex: _Element) -> dict[str, np.ndarray]:
    lines = [ln for ln in body.decode("ascii").splitlines() if ln.strip()]
    start = 0
    for element in elements:
        if element is vertex:
            break
        start += element.count
    rows = lines[start:start + vertex.count]
    if len(rows) < vertex.count:
        raise _BadFileError(f"it is truncated: {len(rows)} of {vertex.count} vertex lines")
    n_props = len(vertex.props)
    values = np.array(" ".join(rows).split(), dtype=np.float64) if rows else np.zeros(0)
    if values.size != vertex.count * n_props:
        raise _BadFileError(f"the vertex lines hold {values.size} numbers, expected {vertex.count} x {n_props}")
    values = values.reshape(vertex.count, n_props)
    return {name: values[:, i].astype(kind) for i, (name, kind) in enumerate(vertex.props)}


def _ply_binary_vertices(data: bytes, offset: int, elements: list[_Element], vertex: _Element,
                         endian: str) -> dict[str, np.ndarray]:
    for element in elements:
        if element is vertex:
            break
        offset = _skip_binary_element(data, offset, element, endian)
    dtype = np.dtype([(name, endian + kind) for name, kind in vertex.props])  # type: ignore[operator]
    need = vertex.count * dtype.itemsize
    if len(data) - offset < need:
        left = max(len(data) - offset, 0)
        raise _BadFileError(f"it is truncated: the vertex data needs {need} bytes, {left} are left")
    table = np.frombuffer(data, dtype=dtype, count=vertex.count, offset=offset)
    return {name: table[name].astype(table[name].dtype.newbyteorder("=")) for name in dtype.names or ()}


def _skip_binary_element(data: bytes, offset: int, element: _Element, endian: str) -> int:
    if not any(isinstance(t, tuple) for _, t in element.props):
        size = sum(np.dtype(t).itemsize for _, t in element.props)  # type: ignore[arg-type]
        return offset + element.count * size
    for _ in range(element.count):
        for _, kind in element.props:
            if isinstance(kind, tuple):
                count_type, item_type = (np.dtype(endian + k) for k in kind)
                if offset + count_type.itemsize > len(data):
                    raise _BadFileError(f"it is truncated inside element {element.name!r}")
                n = int(np.frombuffer(data, count_type, 1, offset)[0])
                offset += count_type.itemsize + n * item_type.itemsize
            else:
                offset += np.dtype(kind).itemsize
    return offset


def _read_pcd(path: Path) -> PointCloud:
    data = path.read_bytes()
    lines, body = _split_header(data, b"DATA")
    header: dict[str, list[str]] = {}
    for line in lines:
        words = line.split()
        if words and not words[0].startswith("#"):
            header[words[0].upper()] = words[1:]
    for key in ("FIELDS", "SIZE", "TYPE", "WIDTH", "DATA"):
        if key not in header:
            raise _BadFileError(f"the header has no {key} line")
    names = header["FIELDS"]
    counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
    sizes, types = [int(s) for s in header["SIZE"]], [t.upper() for t in header["TYPE"]]
    if not len(names) == len(sizes) == len(types) == len(counts):
        raise _BadFileError("FIELDS, SIZE, TYPE and COUNT have different lengths")
    width, height = int(header["WIDTH"][0]), int(header.get("HEIGHT", ["1"])[0])
    n = int(header.get("POINTS", [str(width * height)])[0])
    if width * height != n:
        raise _BadFileError(f"WIDTH x HEIGHT = {width} x {height} does not match POINTS {n}")
    mode = header["DATA"][0].lower() if header["DATA"] else ""
    if not {"x", "y", "z"} <= set(names):
        raise _BadFileError(f"it has no x, y, z fields (it has {names})")
    fields = []
    for i, (name, size, kind, count) in enumerate(zip(names, sizes, types, counts, strict=True)):
        if kind not in "FIU" or len(kind) != 1 or size not in (1, 2, 4, 8) or (kind == "F" and size < 4):
            raise _BadFileError(f"field {name!r} has an unsupported TYPE/SIZE {kind}{size}")
        np_kind = "<" + {"F": "f", "I": "i", "U": "u"}[kind] + str(size)
        fields.append((name if name != "_" else f"_pad{i}", np_kind, (count,) if count > 1 else ()))
    dtype = np.dtype(fields)
    if mode == "ascii":
        tokens = data[body:].decode("ascii").split()
        width_values = sum(counts)
        if len(tokens) < n * width_values:
            raise _BadFileError(f"it is truncated: {len(tokens)} numbers, expected {n} x {width_values}")
        values = np.array(tokens[:n * width_values], dtype=np.float64).reshape(n, width_values)
        table, col = {}, 0
        for (name, kind, shape), count in zip(fields, counts, strict=True):
            block = values[:, col:col + count]
            table[name] = (block[:, 0] if not shape else block).astype(kind[1:])
            col += count
    elif mode == "binary":
        if len(data) - body < n * dtype.itemsize:
            raise _BadFileError(f"it is truncated: the data needs {n * dtype.itemsize} bytes, "
                                f"{len(data) - body} are left")
        raw = np.frombuffer(data, dtype=dtype, count=n, offset=body)
        table = {name: raw[name].astype(raw[name].dtype.newbyteorder("=")) for name in dtype.names or ()}
    elif mode == "binary_compressed":
        raise _BadFileError("DATA binary_compressed (LZF) is not supported; save it as 'binary' or 'ascii' "
                       "(e.g. pcl_convert_pcd_ascii_binary IN OUT 1)")
    else:
        raise _BadFileError(f"unknown DATA mode {mode!r}")
    table = {k: v for k, v in table.items() if not k.startswith("_pad")}
    grid = (height, width) if height > 1 else None
    return _cloud_from_table(table, list(table), grid, "pcd", mode)


def _cloud_from_table(table: dict[str, np.ndarray], names: list[str], grid: tuple[int, int] | None, fmt: str,
                      encoding: str) -> PointCloud:
    xyz = [table["x"], table["y"], table["z"]]
    dtype = np.float32 if all(c.dtype == np.float32 for c in xyz) else np.float64
    points = np.stack([c.astype(dtype) for c in xyz], axis=1) if len(xyz[0]) else np.zeros((0, 3), dtype)
    attributes = {name: np.ascontiguousarray(table[name]) for name in names if name not in ("x", "y", "z")}
    return PointCloud(points, grid_shape=grid, attributes=attributes, format=fmt, encoding=encoding)


def _read_npy(path: Path) -> PointCloud:
    # the header's shape and dtype are checked against the file size before anything is allocated (as the PLY and
    # PCD readers compare their headers with the data); Python objects are never unpickled
    array = read_npy(path, kinds="fiu", what="coordinates", name="it", error=_BadFileError)
    if array.ndim == 2 and array.shape[1] == 3:
        return PointCloud(array, format="npy", encoding="binary")
    if array.ndim == 3 and array.shape[2] == 3:
        return PointCloud(array, format="npy", encoding="binary")
    raise _BadFileError(f"its array has shape {array.shape}; expected [N, 3] or organised [H, W, 3]")


def _read_xyz(path: Path) -> PointCloud:
    text = path.read_text(encoding="ascii").replace(",", " ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loadtxt warns on an empty file
        values = np.loadtxt(io.StringIO(text), comments=["#", "//"], ndmin=2, dtype=np.float64)
    if values.size == 0:
        return PointCloud(np.zeros((0, 3)), format="xyz", encoding="ascii")
    if values.shape[1] < 3:
        raise _BadFileError(f"its rows have {values.shape[1]} columns; expected x y z [extra...]")
    attributes = {"extra": values[:, 3:]} if values.shape[1] > 3 else {}
    return PointCloud(values[:, :3], attributes=attributes, format="xyz", encoding="ascii")


def _read_tiff(path: Path) -> PointCloud:
    try:
        import tifffile
    except ImportError:
        array = _read_tiff_pil(path)
    else:
        log = logging.getLogger("tifffile")
        level = log.level
        log.setLevel(logging.CRITICAL)  # tifffile logs the odd tags of a corrupt file; the errors below say it
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with tifffile.TiffFile(path) as tif:
                    _check_tiff_size(tif, path)
                    array = tif.asarray()
        except _BadFileError:
            raise
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise _BadFileError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            log.setLevel(level)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype.kind != "f":
        raise _BadFileError(f"it holds a {array.dtype} array of shape {array.shape}; an organised xyz TIFF is "
                       "H x W x 3 floats (MVTec 3D-AD's xyz/*.tiff)")
    return PointCloud(array, format="tiff", encoding="binary")


def _check_tiff_size(tif: Any, path: Path) -> None:
    """Refuse a TIFF whose header declares more data than it can hold, before tifffile allocates it: uncompressed
    data must fit in the file; compressed data may expand to at most PIL's decompression-bomb limit of points."""
    from PIL import Image

    if not tif.series:
        raise _BadFileError("it holds no image")
    series = tif.series[0]
    shape, dtype = tuple(int(d) for d in series.shape), np.dtype(series.dtype)
    need, size = math.prod(shape) * dtype.itemsize, path.stat().st_size
    keyframes = [getattr(page, "keyframe", None) or page for page in series.pages if page is not None]
    compressed = any(int(getattr(page, "compression", 1)) != 1 for page in keyframes)
    if not compressed and need > size:
        raise _BadFileError(f"it is truncated or its header is wrong: the header declares {dtype} values of shape "
                            f"{shape} ({need:,} bytes), but the file has {size:,} bytes")
    limit = Image.MAX_IMAGE_PIXELS
    if compressed and limit and math.prod(shape) > 2 * limit * 3:
        raise _BadFileError(f"its header declares {math.prod(shape):,} compressed values (shape {shape}), more than "
                            f"the limit of {2 * limit:,} points x 3 (PIL's decompression-bomb limit)")


def _read_tiff_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            frames = []
            for i in range(getattr(im, "n_frames", 1)):
                im.seek(i)
                frames.append(np.asarray(im, dtype=np.float32) if im.mode == "F" else None)
    except Image.DecompressionBombError as exc:
        raise _BadFileError(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise _BadFileError("PIL cannot read this TIFF (3-channel float TIFFs need the 'tifffile' package: "
                       "pip install tifffile)") from exc
    if len(frames) == 3 and all(f is not None for f in frames):
        return np.stack(frames, axis=-1)  # one float page per coordinate
    raise _BadFileError("PIL can read only TIFFs with one float page per coordinate; install 'tifffile' "
                   "(pip install tifffile) for MVTec 3D-AD xyz TIFFs")


_READERS = {"ply": _read_ply, "pcd": _read_pcd, "npy": _read_npy, "xyz": _read_xyz, "tiff": _read_tiff}


# ----------------------------------------------------------------------------------------------- writing
def tiff_writable() -> bool:
    """Whether ``.tiff`` clouds can be written here (needs ``tifffile``)."""
    try:
        import tifffile  # noqa: F401
    except ImportError:
        return False
    return True


def output_suffix(cloud: PointCloud) -> str:
    """The suffix a synthesized copy of ``cloud`` is written with: its own format where possible, else ``.ply``."""
    if cloud.format == "tiff":
        return ".tiff" if cloud.grid_shape is not None and tiff_writable() else ".ply"
    if cloud.format in ("ply", "pcd", "npy", "xyz"):
        return f".{cloud.format}"
    return ".ply"


def write_pointcloud(cloud: PointCloud, path: str | os.PathLike[str], *, encoding: str | None = None) -> Path:
    """Write ``cloud`` to ``path`` (format from the extension) atomically: the file is whole or absent.

    Args:
        cloud: the cloud to write; invalid points are written as they are (``(0, 0, 0)``).
        path: target file; its extension picks the format.
        encoding: PLY ``ascii``/``binary_little_endian``/``binary_big_endian``, PCD ``ascii``/``binary``.
            Default: the cloud's own encoding when it came from the same format, else the first in
            :data:`FORMATS`.

    Example:
        >>> write_pointcloud(PointCloud(np.random.rand(100, 3)), "cloud.ply", encoding="ascii")   # doctest: +SKIP
    """
    path = Path(path)
    fmt = _format_of(path)
    allowed = FORMATS[fmt]
    if encoding is None:
        encoding = cloud.encoding if cloud.format == fmt and cloud.encoding in allowed else allowed[0]
    if encoding not in allowed:
        raise ConfigError(f"cannot write {path}: {fmt.upper()} encodings are {list(allowed)}, got {encoding!r}.")
    if fmt == "tiff":
        if cloud.grid_shape is None:
            raise DataError(f"cannot write {path}: a TIFF cloud must be organised (H x W), this one is not.",
                            hint="Write it as .ply, .pcd, .npy or .xyz instead.")
        if not tiff_writable():
            raise DataError(f"cannot write {path}: writing TIFF clouds needs the 'tifffile' package.",
                            hint="pip install tifffile, or write .ply/.pcd/.npy instead.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        _WRITERS[fmt](cloud, fh, encoding)
    return path


def _columns(cloud: PointCloud) -> list[tuple[str, np.ndarray]]:
    """Scalar columns to write: x, y, z, then attributes (``[N, C]`` ones split into ``name_0..``)."""
    cols = [("x", cloud.points[:, 0]), ("y", cloud.points[:, 1]), ("z", cloud.points[:, 2])]
    for name, value in cloud.attributes.items():
        value = _writable_dtype(value)
        if value.ndim == 1:
            cols.append((name, value))
        else:
            cols.extend((f"{name}_{i}", value[:, i]) for i in range(value.shape[1]))
    return cols


def _writable_dtype(value: np.ndarray) -> np.ndarray:
    if value.dtype == np.bool_:
        return value.astype(np.uint8)
    if value.dtype.kind in "iu" and value.dtype.itemsize == 8:
        return value.astype(np.float64)
    if value.dtype.kind == "f" and value.dtype.itemsize not in (4, 8):
        return value.astype(np.float32)
    if value.dtype.kind not in "iuf":
        raise DataError(f"attribute of type {value.dtype} cannot be written to a point-cloud file.")
    return value


def _safe_name(name: str) -> str:
    return re.sub(r"\s+", "_", name) or "_"


def _text_table(cols: list[tuple[str, np.ndarray]]) -> bytes:
    fmt = ["%d" if c.dtype.kind in "iu" else ("%.9g" if c.dtype.itemsize == 4 else "%.17g") for _, c in cols]
    buffer = io.StringIO()
    if len(cols[0][1]):
        table = np.empty((len(cols[0][1]), len(cols)), dtype=object)
        for i, (_, c) in enumerate(cols):
            table[:, i] = c
        np.savetxt(buffer, table, fmt=fmt, delimiter=" ")
    return buffer.getvalue().encode("ascii")


def _write_ply(cloud: PointCloud, fh: BinaryIO, encoding: str) -> None:
    cols = _columns(cloud)
    header = ["ply", f"format {encoding} 1.0", "comment written by uad_plugins",
              f"element vertex {cloud.n_points}"]
    header += [f"property {_PLY_NAMES[c.dtype.str[1:]]} {_safe_name(n)}" for n, c in cols]
    fh.write(("\n".join([*header, "end_header"]) + "\n").encode("ascii"))
    if encoding == "ascii":
        fh.write(_text_table(cols))
        return
    endian = _PLY_ENCODINGS[encoding]
    table = np.empty(cloud.n_points, dtype=[(f"f{i}", endian + c.dtype.str[1:]) for i, (_, c) in enumerate(cols)])
    for i, (_, c) in enumerate(cols):
        table[f"f{i}"] = c
    fh.write(table.tobytes())


def _write_pcd(cloud: PointCloud, fh: BinaryIO, encoding: str) -> None:
    cols = _columns(cloud)
    h, w = cloud.grid_shape or (1, cloud.n_points)
    kinds = [{"f": "F", "i": "I", "u": "U"}[c.dtype.kind] for _, c in cols]
    header = ["# .PCD v0.7 - written by uad_plugins", "VERSION 0.7",
              "FIELDS " + " ".join(_safe_name(n) for n, _ in cols),
              "SIZE " + " ".join(str(c.dtype.itemsize) for _, c in cols),
              "TYPE " + " ".join(kinds), "COUNT " + " ".join("1" for _ in cols),
              f"WIDTH {w}", f"HEIGHT {h}", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {cloud.n_points}", f"DATA {encoding}"]
    fh.write(("\n".join(header) + "\n").encode("ascii"))
    if encoding == "ascii":
        fh.write(_text_table(cols))
        return
    table = np.empty(cloud.n_points, dtype=[(f"f{i}", "<" + c.dtype.str[1:]) for i, (_, c) in enumerate(cols)])
    for i, (_, c) in enumerate(cols):
        table[f"f{i}"] = c
    fh.write(table.tobytes())


def _write_npy(cloud: PointCloud, fh: BinaryIO, encoding: str) -> None:
    del encoding
    np.save(fh, cloud.organised if cloud.grid_shape is not None else cloud.points, allow_pickle=False)


def _write_xyz(cloud: PointCloud, fh: BinaryIO, encoding: str) -> None:
    del encoding
    cols = _columns(cloud)
    fh.write(_text_table(cols))


def _write_tiff(cloud: PointCloud, fh: BinaryIO, encoding: str) -> None:
    del encoding
    import tifffile

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tifffile.imwrite(buffer, np.ascontiguousarray(cloud.organised), photometric="rgb")
    fh.write(buffer.getvalue())


_WRITERS: dict[str, Any] = {"ply": _write_ply, "pcd": _write_pcd, "npy": _write_npy, "xyz": _write_xyz,
                            "tiff": _write_tiff}
