"""Run folders: where a run's config, plugins.json, checkpoint, metrics and heatmaps land."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["component_record", "find_run_dir", "new_run_dir", "plugins_manifest", "write_json_atomic",
           "write_text_atomic"]

RUN_MARKER = "plugins.json"


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: the file is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON atomically (sorted keys off, 2-space indent, non-JSON values as strings)."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def new_run_dir(root: str | os.PathLike[str], *parts: str) -> Path:
    """Create ``root/part/.../vN`` (N one more than the last) with a ``latest`` link; return the real path."""
    from anomalib.utils.path import create_versioned_dir

    base = Path(root).joinpath(*[p for p in parts if p])
    return create_versioned_dir(base).resolve()


def find_run_dir(path: str | os.PathLike[str]) -> Path | None:
    """The run folder that holds ``path`` (a checkpoint inside it), recognised by its plugins.json."""
    here = Path(path).resolve()
    for folder in [here, *here.parents]:
        if (folder / RUN_MARKER).is_file():
            return folder
    return None


def component_record(obj: Any, kind: str) -> dict[str, Any]:
    """What plugins.json says about one component: reference, class and the distribution that provided it."""
    spec = getattr(obj, "_uad_spec", None)
    cls = type(obj)
    record: dict[str, Any] = {"kind": kind, "class_path": f"{cls.__module__}.{cls.__qualname__}"}
    if spec is not None:
        record.update(reference=spec.reference, name=spec.name, plugin=spec.plugin, source=spec.source,
                      distribution=spec.distribution, version=spec.version,
                      requirement=f"{spec.distribution}=={spec.version}")
    else:
        top = cls.__module__.split(".")[0]
        record.update(reference=record["class_path"], distribution=top, version=_dist_version(top))
    return record


def plugins_manifest(components: Iterable[tuple[str, Any]], extra: Mapping[str, Any] | None = None) -> dict:
    """The plugins.json document: components used, library versions and the machine."""
    import importlib.metadata as md

    versions = {}
    for dist in ("uad_plugins", "anomalib", "torch", "lightning", "timm", "openvino"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return {
        "components": [component_record(obj, kind) for kind, obj in components if obj is not None],
        "libraries": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **dict(extra or {}),
    }


def _dist_version(top_module: str) -> str | None:
    import importlib.metadata as md

    for name in (top_module, top_module.replace("_", "-")):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None
