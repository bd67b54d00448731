"""Temporary folders that the next run can clean up: a SIGKILLed process cannot remove its own.

Each folder made here holds :data:`OWNER_MARKER` (``{"pid", "host"}``). A later run removes folders of the same
prefix only when they are real folders of our user, carrying our marker, naming this host and a process that is
gone; anything else with a similar name is left alone. Standard library only (the edge runtime uses it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["OWNER_MARKER", "make_owned_tempdir", "owned_tempdir", "remove_stale_tempdirs"]

#: a file in each temporary folder made here: {"pid", "host"} of the process that owns it (remove it before the
#: folder is renamed into place)
OWNER_MARKER = ".uad_tmp_owner"
_MARKER_MAX_BYTES = 4096


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: never guess, keep the folder
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def make_owned_tempdir(prefix: str, dir: str | Path | None = None) -> Path:
    """``tempfile.mkdtemp`` plus the :data:`OWNER_MARKER` of this process, after removing stale folders of the
    same ``prefix`` in the same place (see :func:`remove_stale_tempdirs`)."""
    parent = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    remove_stale_tempdirs(parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (tmp / OWNER_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    return tmp


@contextlib.contextmanager
def owned_tempdir(prefix: str, dir: str | Path | None = None) -> Iterator[Path]:
    """A :func:`make_owned_tempdir` folder, removed on exit (like ``tempfile.TemporaryDirectory``)."""
    tmp = make_owned_tempdir(prefix, dir)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stale_owner(folder: Path) -> bool:
    """True when ``folder`` is a real folder of ours whose marker names a dead process on this host."""
    try:
        info = os.lstat(folder)
        marker = os.lstat(folder / OWNER_MARKER)
        if not stat.S_ISDIR(info.st_mode) or not stat.S_ISREG(marker.st_mode) or marker.st_size > _MARKER_MAX_BYTES:
            return False
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or marker.st_uid != os.getuid()):
            return False
        owner = json.loads((folder / OWNER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    return not _pid_alive(pid)


def remove_stale_tempdirs(parent: str | Path, prefix: str) -> list[Path]:
    """Remove the folders ``parent/prefix*`` left by killed processes (see :data:`OWNER_MARKER`); returns them."""
    removed: list[Path] = []
    try:
        entries = [entry for entry in Path(parent).iterdir() if entry.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if _stale_owner(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
