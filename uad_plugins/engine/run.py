"""Run folders: where a run's config, plugins.json, checkpoint, metrics and heatmaps land."""

from __future__ import annotations

import os
import platform
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["discard_run", "find_run_dir", "new_run_dir", "plugins_manifest", "publish_run"]

RUN_MARKER = "plugins.json"
VERSION_RE = re.compile(r"^v\d+$")


def new_run_dir(root: str | os.PathLike[str], *parts: str) -> Path:
    """Create ``root/part/.../vN`` (N one more than the highest) and return its real path.

    Safe when several runs start at once: a version another process just took is skipped (``mkdir`` is the lock).
    The ``latest`` link is not touched here: :func:`publish_run` points it at a run once the run is complete.
    """
    base = Path(root).joinpath(*[p for p in parts if p]).resolve()
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(10_000):
        taken = [int(p.name[1:]) for p in base.iterdir() if VERSION_RE.match(p.name)]
        folder = base / f"v{max(taken) + 1 if taken else 0}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # another run took this version between listing and mkdir
        return folder
    raise RuntimeError(f"could not create a new run folder under {base}")


def publish_run(run_dir: str | os.PathLike[str]) -> None:
    """Point ``<run_dir>/../latest`` at a complete run (a symlink swapped in by one rename).

    A ``latest`` that is not a symlink (a folder or file of the user's) is left alone.
    """
    run_dir = Path(run_dir)
    link = run_dir.parent / "latest"
    if link.exists() and not link.is_symlink():
        return
    tmp = run_dir.parent / f".latest.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)  # no symlinks on this file system: the run folders are still there


def discard_run(run_dir: str | os.PathLike[str]) -> None:
    """Remove a run folder this process created for a run that failed (``latest`` never pointed at it)."""
    shutil.rmtree(run_dir, ignore_errors=True)


def find_run_dir(path: str | os.PathLike[str]) -> Path | None:
    """The run folder that holds ``path`` (a checkpoint inside it), recognised by its plugins.json."""
    here = Path(path).resolve()
    for folder in [here, *here.parents]:
        if (folder / RUN_MARKER).is_file():
            return folder
    return None


def plugins_manifest(components: Iterable[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> dict:
    """The plugins.json document: the components used (records of ``uad_plugins.provenance.component_record``),
    library versions and the machine."""
    import importlib.metadata as md

    versions = {}
    for dist in ("uad_plugins", "anomalib", "torch", "lightning", "timm", "openvino"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return {
        "components": [dict(record) for record in components],
        "libraries": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **dict(extra or {}),
    }
