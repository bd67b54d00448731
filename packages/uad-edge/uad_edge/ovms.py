"""An OpenVINO Model Server (OVMS) model repository from a bundle: ``<repo>/<name>/<version>/`` holding the bundle's
verified ``model.xml`` and ``model.bin`` (and its ``manifest.json`` as ``uad_manifest.json``: thresholds, input,
precision hint), written whole (a hidden temporary sibling renamed into place, so a watching OVMS never loads half a
version) and never over anything: an existing version is refused, the default version is the next free number.

Standard library and ``uad_edge`` only, like the rest of the edge runtime.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from uad_edge.atomic import staged_folder
from uad_edge.errors import EdgeError
from uad_edge.manifest import MANIFEST_FILE, MODEL_BIN, MODEL_XML, read_bundle

__all__ = ["OVMS_MANIFEST", "OvmsModel", "check_ovms_target", "ovms_command", "write_ovms_layout"]

#: the bundle's manifest inside the version folder (OVMS reads the .xml/.bin pair and ignores other files)
OVMS_MANIFEST = "uad_manifest.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class OvmsModel:
    """A written version: ``path`` is ``<repo>/<name>/<version>``."""

    repo: Path
    name: str
    version: int
    path: Path
    precision_hint: str

    def command(self, rest_port: int = 8000) -> str:
        """The ``ovms`` command line that serves this model (see :func:`ovms_command`)."""
        return ovms_command(self.repo, self.name, self.precision_hint, rest_port=rest_port)


def ovms_command(repo: str | Path, name: str, precision_hint: str = "f32", *, rest_port: int = 8000) -> str:
    """``ovms --model_path <repo>/<name> --model_name <name> --rest_port ... --plugin_config ...``: serves the latest
    version with the bundle's CPU inference precision pinned (OVMS would otherwise pick bf16 on CPUs that have it)."""
    config = json.dumps({"INFERENCE_PRECISION_HINT": precision_hint}, separators=(",", ":"))
    return (f"ovms --model_path {Path(repo) / name} --model_name {name} --port 9000 --rest_port {rest_port} "
            f"--plugin_config '{config}'")


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.exists():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())


def check_ovms_target(repo: str | Path, name: str, version: int | None = None) -> int:
    """The version that would be written under ``<repo>/<name>`` (an :class:`EdgeError` when the name does not fit
    a URL, the place is not a folder, or ``version`` exists)."""
    if not _NAME.fullmatch(name):
        raise EdgeError(f"OVMS model name {name!r} cannot be used in a URL.",
                        hint="Use letters, digits, '_', '.' or '-' (at most 128 characters).")
    model_dir = Path(repo) / name
    for place in (Path(repo), model_dir):
        if place.is_symlink() or (place.exists() and not place.is_dir()):
            raise EdgeError(f"{place} exists and is not a folder; an OVMS repository is a folder of model folders.",
                            hint="Choose another --ovms_repo or --ovms_name. Nothing was written.")
    existing = _versions(model_dir)
    if version is None:
        return (existing[-1] + 1) if existing else 1
    if version < 1:
        raise EdgeError(f"OVMS versions are positive integers, got {version}.")
    if (model_dir / str(version)).exists():
        raise EdgeError(f"{model_dir / str(version)} already exists; a version is never overwritten.",
                        hint="Leave the version out to write the next free one. Nothing was written.")
    return version


def write_ovms_layout(bundle: str | Path, repo: str | Path, *, name: str | None = None,
                      version: int | None = None) -> OvmsModel:
    """Write ``<repo>/<name>/<version>/model.xml|bin`` (+ ``uad_manifest.json``) from a verified bundle; ``name``
    defaults to the bundle folder's name (as for ``uad serve``), ``version`` to the next free number."""
    root = Path(bundle)
    chosen = name if name is not None else root.resolve().name
    number = check_ovms_target(repo, chosen, version)
    manifest, blobs = read_bundle(root, keep=(MODEL_XML, MODEL_BIN))  # sha256 and format checked; exact bytes kept
    manifest_bytes = (root / MANIFEST_FILE).read_bytes()
    if json.loads(manifest_bytes) != manifest:
        raise EdgeError(f"bundle {root}: manifest.json changed while it was read.", hint="Try again.")
    final = Path(repo) / chosen / str(number)
    with staged_folder(final) as tmp:
        (tmp / MODEL_XML).write_bytes(blobs[MODEL_XML])
        (tmp / MODEL_BIN).write_bytes(blobs[MODEL_BIN])
        (tmp / OVMS_MANIFEST).write_bytes(manifest_bytes)
        tmp.chmod(0o755)  # mkdtemp makes it private; OVMS (often another user in a container) reads it
    return OvmsModel(repo=Path(repo), name=chosen, version=number, path=final,
                     precision_hint=manifest.get("inference_precision_hint") or "f32")
