"""Input files someone else gave us, checked before anything is allocated (numpy and the standard library only).

:func:`read_npy` checks a ``.npy`` header (never unpickled; object arrays refused) against the bytes the file holds
before reading exactly those bytes, and :func:`find_files` lists folders, naming symbolic-link loops, broken links
and pipes instead of skipping them. The edge runtime raises :class:`EdgeError`; the core readers
(``uad_plugins.data``, ``uad_plugins.data.pointcloud``) pass ``error=DataError`` (``uad_edge`` may not import
``uad_plugins``; ``uad_plugins`` may import this module).
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO

import numpy as np

from uad_edge.errors import EdgeError

__all__ = ["NPY_HINT", "find_files", "npy_header", "path_problem", "read_npy", "read_npy_header"]

#: what to do about a .npy file that cannot be read
NPY_HINT = "The file is corrupt, truncated or not a .npy array of numbers: save it again with numpy.save."

#: how the file helpers below raise: ``error(message, hint=...)``; EdgeError here, DataError in the core readers
ErrorFactory = Callable[..., Exception]


def path_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a regular file, as the end of a sentence that names it: ``"does not exist"``,
    ``"is a symbolic-link loop"``, ``"is a broken symbolic link (its target X does not exist)"``, ``"is a folder,
    not a file"``, ``"is not a regular file (...)"``, ``"cannot be read (...)"``; ``None`` for a regular file (links
    followed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic-link loop"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                return f"is a broken symbolic link (its target {os.readlink(path)} does not exist)"
            return "does not exist"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a pipe, socket or device)"
    return None


def find_files(root: str | Path, suffixes: Collection[str] | None, *, hidden: bool = False,
               error: ErrorFactory = EdgeError) -> list[Path]:
    """The regular files under the folder ``root`` (recursive, sorted) whose extension is in ``suffixes``
    (lower case; ``None``: every file).

    Names starting with ``.`` are skipped unless ``hidden``; links to files are followed, links to folders are not
    (as ``Path.rglob``). These raise ``error`` naming the path, rather than being skipped here and failing later in
    a reader: a folder that cannot be listed; a symbolic-link loop (a link to itself, or to a folder that contains
    it, e.g. ``ln -s . loop``); and, named with one of ``suffixes`` (not ``None``), a broken link, a link to a
    folder, a pipe or device.
    """
    wanted = None if suffixes is None else {s.lower() for s in suffixes}
    found: list[Path] = []
    folders = [Path(root)]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)  # the first problem is always the same
        except OSError as exc:
            raise error(f"folder {folder} cannot be listed ({exc.strerror or exc}).",
                        hint="Check that it exists and that you may read it.") from exc
        for entry in listed:
            if entry.name.startswith(".") and not hidden:
                continue
            path = Path(entry.path)
            named = wanted is not None and path.suffix.lower() in wanted  # named like a wanted file
            problem = None
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(path)
                    continue
                if entry.is_file():  # a file, or a link to one
                    if wanted is None or named:
                        found.append(path)
                    continue
                if entry.is_dir():  # a link to a folder: not followed
                    problem = _folder_link_problem(path, folder, named)
                elif named:
                    problem = path_problem(path) or "cannot be read"
            except OSError:  # a link to itself, or a chain of links that ends in a loop
                problem = path_problem(path) or "is a symbolic-link loop"
            if problem is not None:
                raise error(f"{path} {problem}.",
                            hint="Repair or remove it: inputs are regular files (or links to them), and links to "
                                 "folders are not followed.")
    return sorted(found)


def _folder_link_problem(link: Path, folder: Path, named: bool) -> str | None:
    """What is wrong with ``link``, a symbolic link in ``folder`` to a folder: a loop when it points to ``folder``
    or above; a link to a folder ``named`` like a wanted file; else nothing (it is skipped)."""
    target, here = os.path.realpath(link), os.path.realpath(folder)
    try:
        loop = os.path.commonpath([here, target]) == target
    except ValueError:  # another drive
        loop = False
    if loop:
        return f"is a symbolic-link loop (a link to {target}, which contains it)"
    return "is a link to a folder, not a file" if named else None


def _open_regular(path: Path, label: str, error: ErrorFactory) -> tuple[int, int]:
    """Open ``path`` for reading without blocking (a pipe would wait for a writer); its descriptor and size, or
    ``error`` when it is not a readable regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise error(f"{label} {path_problem(path) or f'cannot be opened ({exc.strerror or exc})'}.",
                    hint="Check the path.") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "is a folder, not a file" if stat.S_ISDIR(info.st_mode) else \
            "is not a regular file (a pipe, socket or device)"
        raise error(f"{label} {what}.", hint="Check the path.")
    return fd, int(info.st_size)


def read_npy_header(fh: BinaryIO, size: int, label: str, *, kinds: str = "biuf", what: str = "numbers",
                    error: ErrorFactory = EdgeError) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Check the header of the ``.npy`` stream ``fh`` (positioned at its start, ``size`` bytes long: a file, or a
    member of an ``.npz`` archive) as :func:`npy_header` does; ``fh`` is left at the first byte of the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
    except ValueError as exc:
        raise error(f"{label} has no NumPy header: it is not a .npy file.", hint=NPY_HINT) from exc
    if version not in ((1, 0), (2, 0)):  # 3.0 only adds UTF-8 names of structured fields, never read here
        raise error(f"{label} has NumPy format version {version[0]}.{version[1]}; arrays of numbers are 1.0 or 2.0.",
                    hint=NPY_HINT)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    try:
        shape, fortran_order, dtype = read(fh)
    except (ValueError, TypeError, SyntaxError, OverflowError, EOFError, UnicodeDecodeError) as exc:
        reason = "it is longer than 10000 bytes" if "max_header_size" in str(exc) else " ".join(str(exc).split())
        raise error(f"{label} has a corrupt NumPy header ({reason}).", hint=NPY_HINT) from exc
    if dtype.hasobject:  # numpy would unpickle them: never
        raise error(f"{label} holds Python objects (pickled), not {what}; such files are never loaded.",
                    hint="Save an array of numbers with numpy.save(path, array, allow_pickle=False).")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds:
        raise error(f"{label} holds {dtype} values, not {what}.", hint=NPY_HINT)
    if any(d < 0 for d in shape):
        raise error(f"{label} has a corrupt NumPy header (shape {shape}).", hint=NPY_HINT)
    need = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    have = size - fh.tell()
    if have < need:
        raise error(f"{label} is truncated or its header is wrong: the header declares {dtype} values of shape "
                    f"{shape} ({need:,} bytes), but only {max(have, 0):,} bytes follow it.", hint=NPY_HINT)
    if have > need:
        raise error(f"{label} has {have - need:,} bytes after the {dtype} values of shape {shape} that its header "
                    "declares: it is corrupt or not one .npy array.", hint=NPY_HINT)
    return tuple(int(d) for d in shape), bool(fortran_order), dtype


def npy_header(path: str | Path, *, kinds: str = "biuf", what: str = "numbers", name: str | None = None,
               error: ErrorFactory = EdgeError) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of a ``.npy`` file, checked without reading its data.

    Checked: a regular file; a NumPy header (format 1.0 or 2.0, parsed by ``numpy.lib.format``, never unpickled);
    no Python objects, no structured records, a dtype kind in ``kinds`` (``b`` bool, ``i``/``u`` integers, ``f``
    floats, ``c`` complex); and exactly ``prod(shape) * itemsize`` bytes of data after the header, so a header that
    claims a huge shape is refused before anything is allocated. Failures raise ``error(message, hint=...)``
    naming the file (``name`` replaces the path in messages).
    """
    path = Path(path)
    label = str(path) if name is None else name
    fd, size = _open_regular(path, label, error)
    with os.fdopen(fd, "rb") as fh:
        return read_npy_header(fh, size, label, kinds=kinds, what=what, error=error)


def read_npy(path: str | Path, *, kinds: str = "biuf", what: str = "numbers", name: str | None = None,
             error: ErrorFactory = EdgeError) -> np.ndarray:
    """Load a ``.npy`` file like ``numpy.load(path, allow_pickle=False)`` after the checks of :func:`npy_header`;
    reads exactly the bytes its header declares (never more than the file holds)."""
    path = Path(path)
    label = str(path) if name is None else name
    fd, size = _open_regular(path, label, error)
    with os.fdopen(fd, "rb") as fh:
        shape, fortran_order, dtype = read_npy_header(fh, size, label, kinds=kinds, what=what, error=error)
        count = math.prod(shape)
        try:
            array = np.fromfile(fh, dtype=dtype, count=count) if count else np.empty(0, dtype)
        except (OSError, ValueError) as exc:
            raise error(f"{label} cannot be read ({exc}).", hint=NPY_HINT) from exc
    if array.size != count:  # the file shrank since it was checked
        raise error(f"{label} is truncated: {array.size} of {count} values could be read.", hint=NPY_HINT)
    if fortran_order:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)
