"""Whole-or-nothing writes: a temporary file (or folder) beside the target, then one rename onto the target.

A reader never sees a half-written file or folder, and a failed write (an exception, a full disk, Ctrl-C) leaves
the target as it was and no temporary file behind. Standard library only, so the edge runtime can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_path", "publish_folder", "staged_folder", "write_json_atomic", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (with ``suffix``, for writers that pick the format from it); when
    the block ends without an exception the file there replaces ``path``, otherwise it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """``open`` for writing (``"w"`` text in UTF-8, or ``"wb"``) that lands whole at ``path`` or not at all."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a new file: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        encoding = "utf-8" if mode == "w" else None
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON atomically (2-space indent, keys in insertion order, non-JSON values as strings)."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def publish_folder(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Rename the filled folder ``tmp`` (a sibling of ``final``) to ``final`` in one step; return ``final``.

    ``final`` may be missing or an empty folder (which is replaced). Anything else there raises ``OSError`` and
    leaves ``tmp`` in place: the caller removes it, or merges it into ``final``.
    """
    final = Path(final)
    if final.exists():
        final.rmdir()  # an empty folder only
    os.rename(tmp, final)
    return final


@contextlib.contextmanager
def staged_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new temporary sibling folder of ``final`` to fill; when the block ends without an exception it is
    published as ``final`` (see :func:`publish_folder`), otherwise it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        publish_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
