"""Bundle manifests: the canonical form and checksum that seal ``manifest.json``, and every check the runtime makes
on a bundle before it reads the model or allocates anything for an input.

What a bundle holds and what is verified (``verify=True``, the default everywhere):

- ``manifest.json`` must be a JSON object (no duplicate keys, at most 16 MiB). Format 2 carries
  ``manifest_sha256``: the sha256 of :func:`canonical_json` of the manifest without that field. Any change to a value
  (threshold, precision, input size, a file hash...) no longer matches it. This detects edits and corruption, not a
  deliberate forger, who can recompute it: callers who need that pin the value they recorded at export
  (``expected_manifest_sha256``), which then covers every listed file too.
- ``files`` maps plain relative paths inside the bundle (``[A-Za-z0-9_][A-Za-z0-9._-]*`` parts joined by ``/``; no
  absolute path, ``..``, hidden part, backslash or link) to their sha256. ``model.xml``, ``model.bin`` and
  ``parity.json`` must be listed, and every listed file must be a regular file whose hash matches. A key that is not
  such a path is refused before anything is opened; files that are not listed are never read.
- ``input`` must have integer dims within :data:`IMAGE_SIDE` (images, 3 channels) or :data:`SIGNAL_LEADS` /
  :data:`SIGNAL_LENGTH` (signals); the runtime then compares them with the graph's input shape before compiling it.

This module imports nothing outside ``uad_edge`` and the standard library (the exporter, ``uad_plugins.export``,
imports it to write the checksum).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from uad_edge.errors import EdgeError

__all__ = ["BUNDLE_FILES", "DIGEST_KEY", "FORMAT", "FORMAT_VERSION", "IMAGE_SIDE", "INFERENCE_PRECISION",
           "INT8_STRATEGIES", "LISTED_FILES", "MANIFEST_FILE", "MODEL_BIN", "MODEL_XML", "PARITY_FILE", "PRECISIONS",
           "SIGNAL_LEADS", "SIGNAL_LENGTH", "SUPPORTED_FORMAT_VERSIONS", "bundle_input", "canonical_json",
           "manifest_digest", "read_bundle", "read_manifest", "seal_manifest", "sha256_file"]

FORMAT = "uad-bundle"
#: 2: ``manifest_sha256`` seals the manifest, and model.xml, model.bin and parity.json must be listed in ``files``
FORMAT_VERSION = 2
#: Version 1 (no manifest checksum) is read only with ``verify=False``. Accepting it under ``verify=True`` would let
#: anyone bypass the manifest checksum by writing ``"format_version": 1`` and deleting ``manifest_sha256`` (a
#: downgrade), so a verified load refuses it and says to export again; ``verify=False`` reads it as before.
SUPPORTED_FORMAT_VERSIONS = (1, 2)
DIGEST_KEY = "manifest_sha256"
#: the files of a bundle (docs/bundle-format.md)
MANIFEST_FILE = "manifest.json"
MODEL_XML = "model.xml"
MODEL_BIN = "model.bin"
PARITY_FILE = "parity.json"
#: files that every bundle holds, checked before the manifest is parsed
PRESENT_FILES = (MANIFEST_FILE, MODEL_XML, MODEL_BIN)
#: files that ``files`` must list (with their sha256)
LISTED_FILES = (MODEL_XML, MODEL_BIN, PARITY_FILE)
#: everything a bundle folder holds (all that ``uad export --overwrite`` may replace)
BUNDLE_FILES = frozenset({MANIFEST_FILE, *LISTED_FILES})
MODALITIES = ("image", "signal")
#: the weights precisions of a bundle (``manifest.precision``)
PRECISIONS = ("fp32", "fp16", "int8")
#: how an INT8 bundle's graph was quantized (``parity.quantization.strategy``; see uad_plugins.export.quantize)
INT8_STRATEGIES = ("accuracy_control", "ptq", "backbone")
PRECISION_HINTS = ("f32", "f16", "bf16")
#: ``manifest.inference_precision_hint`` of each precision: OpenVINO CPU runs FP32 IR in bf16 on CPUs that have it
#: unless told otherwise, so every bundle pins f32
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f32", "int8": "f32"}
MAX_MANIFEST_BYTES = 16 << 20
#: inclusive bounds of an image bundle's height and width (channels must be 3)
IMAGE_SIDE = (1, 16384)
#: inclusive bounds of a signal bundle's leads K and window length Q, and of K * Q (1 GiB of float32 per window)
SIGNAL_LEADS = (1, 1024)
SIGNAL_LENGTH = (1, 10**7)
SIGNAL_MAX_POINTS = 1 << 28

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REEXPORT = "Export the bundle again with 'uad export', or copy the original bundle folder."
_UPGRADE = "Upgrade uad-edge (or uad_plugins, which installs it)."


def canonical_json(value: Any) -> bytes:
    """The bytes the manifest checksum covers: sorted keys, no whitespace, ASCII escapes (Python's float repr)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``manifest`` without its ``manifest_sha256`` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != DIGEST_KEY})).hexdigest()


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as it reads back from JSON (``default=str`` for odd values), with ``manifest_sha256`` added.
    Write the result with any indentation: the checksum covers the parsed content, not the whitespace."""
    plain = json.loads(json.dumps({k: v for k, v in manifest.items() if k != DIGEST_KEY}, default=str))
    plain[DIGEST_KEY] = manifest_digest(plain)
    return plain


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _regular_file(root: Path, relative: str) -> Path | None:
    """``root/relative`` if every part below ``root`` exists, is no link, and the last is a regular file."""
    current = root
    for part in relative.split("/"):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            raise EdgeError(f"bundle {root}: {relative} is or goes through a symbolic link; a bundle holds plain "
                            "files only.", hint="Copy the bundle with its files (cp -rL), or export it again.")
    return current if stat.S_ISREG(mode) else None


def _read_regular(path: Path) -> bytes:
    """The file's bytes, refusing a link swapped in since the check (O_NOFOLLOW)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        return fh.read()


def _check_key(root: Path, key: Any) -> str:
    """A ``files`` key that is a plain relative path inside the bundle, else an :class:`EdgeError` naming it."""
    if isinstance(key, str) and len(key) <= 1024 and all(_PART.fullmatch(part) for part in key.split("/")):
        return key
    raise EdgeError(f"bundle {root}: manifest.json lists the file {key!r}, which is not a plain relative path inside "
                    "the bundle (absolute paths, '..', hidden names, backslashes and other characters are refused); "
                    "nothing outside the bundle is read.",
                    hint="Do not use this bundle: its manifest was edited. " + _REEXPORT)


def bundle_input(manifest: dict[str, Any], root: str | Path = "bundle") -> tuple[str, tuple[int, int], bool]:
    """``(modality, input_size, dynamic_batch)`` of a manifest, with its bounds checked: ``input_size`` is
    ``(height, width)`` for images and ``(leads, length)`` for signals."""
    modality = manifest.get("modality") or "image"
    if modality not in MODALITIES:
        raise EdgeError(f"bundle {root} holds a {modality!r} model; this runtime reads "
                        f"{' and '.join(MODALITIES)} bundles.", hint=_UPGRADE)
    spec = manifest.get("input")
    if not isinstance(spec, dict):
        raise EdgeError(f"bundle {root}: manifest.json has no 'input' object (got {type(spec).__name__}).",
                        hint=_REEXPORT)
    if modality == "signal":
        fields = (("leads", SIGNAL_LEADS), ("length", SIGNAL_LENGTH))
    else:
        fields = (("height", IMAGE_SIDE), ("width", IMAGE_SIDE))
        if spec.get("channels") != 3 or not _is_int(spec.get("channels")):
            raise EdgeError(f"bundle {root}: manifest.json input.channels is {spec.get('channels')!r}; an image "
                            "bundle takes 3 (RGB).", hint=_REEXPORT)
    dims = []
    for name, (low, high) in fields:
        value = spec.get(name)
        if not _is_int(value) or not low <= value <= high:
            raise EdgeError(f"bundle {root}: manifest.json input.{name} is {value!r}; {modality} bundles take an "
                            f"integer from {low} to {high}. Nothing was allocated.", hint=_REEXPORT)
        dims.append(value)
    if modality == "signal" and dims[0] * dims[1] > SIGNAL_MAX_POINTS:
        raise EdgeError(f"bundle {root}: manifest.json asks for windows of {dims[0]} leads x {dims[1]} samples, more "
                        f"than {SIGNAL_MAX_POINTS} points. Nothing was allocated.", hint=_REEXPORT)
    dynamic = spec.get("dynamic_batch", True)
    if not isinstance(dynamic, bool):
        raise EdgeError(f"bundle {root}: manifest.json input.dynamic_batch is {dynamic!r}, not true or false.",
                        hint=_REEXPORT)
    return modality, (dims[0], dims[1]), dynamic


def _parse(root: Path, verify: bool) -> dict[str, Any]:
    path = _regular_file(root, MANIFEST_FILE) if verify else root / MANIFEST_FILE
    if path is None:
        raise EdgeError(f"bundle {root}: manifest.json is not a regular file.", hint=_REEXPORT)
    try:
        if os.stat(path).st_size > MAX_MANIFEST_BYTES:
            raise EdgeError(f"bundle {root}: manifest.json is larger than {MAX_MANIFEST_BYTES >> 20} MiB; a manifest "
                            "is a few kilobytes.", hint=_REEXPORT)
        data = _read_regular(path) if verify else path.read_bytes()
    except OSError as exc:
        raise EdgeError(f"bundle {root}: manifest.json cannot be read ({exc}).", hint=_REEXPORT) from exc
    try:
        manifest = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise EdgeError(f"bundle {root}: manifest.json is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}).",
                        hint="The file is corrupt; export the bundle again.") from exc
    if not isinstance(manifest, dict):
        raise EdgeError(f"bundle {root}: manifest.json holds a JSON {type(manifest).__name__}, not an object.",
                        hint="The file is not a bundle manifest; " + _REEXPORT[0].lower() + _REEXPORT[1:])
    if manifest.get("format") != FORMAT:
        raise EdgeError(f"{root} is not a uad bundle (manifest format {manifest.get('format')!r}).")
    version = manifest.get("format_version")
    if not _is_int(version) or version not in SUPPORTED_FORMAT_VERSIONS:
        raise EdgeError(f"bundle {root} has format version {version!r}; this runtime reads "
                        f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}.", hint=_UPGRADE)
    return manifest


def _check_digest(root: Path, manifest: dict[str, Any], expected: str | None) -> None:
    if manifest["format_version"] < 2:
        raise EdgeError(f"bundle {root} has format version {manifest['format_version']}, whose manifest.json carries "
                        "no checksum, so it cannot be verified.",
                        hint="Export it again with this uad_plugins (format 2); in Python, verify=False loads it "
                        "unverified if you trust where it came from.")
    recorded = manifest.get(DIGEST_KEY)
    actual = manifest_digest(manifest)
    if not isinstance(recorded, str) or recorded != actual:
        raise EdgeError(f"bundle {root}: manifest.json does not match its {DIGEST_KEY} (it was edited or damaged "
                        "after export); it is not trusted.",
                        hint="Restore the original manifest.json, or export the bundle again.")
    if expected is not None and expected.strip().lower() != actual:
        raise EdgeError(f"bundle {root}: manifest {DIGEST_KEY} is {actual}, not the expected {expected.strip()}.",
                        hint="This is not the bundle you pinned; get the original one.")


def _check_files(root: Path, manifest: dict[str, Any], keep: tuple[str, ...]) -> dict[str, bytes]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise EdgeError(f"bundle {root}: manifest.json has no 'files' object (got {type(files).__name__}).",
                        hint=_REEXPORT)
    unlisted = [name for name in LISTED_FILES if name not in files]
    if unlisted:
        raise EdgeError(f"bundle {root}: manifest.json 'files' does not list {', '.join(unlisted)}, so "
                        f"{'it' if len(unlisted) == 1 else 'they'} cannot be verified.", hint=_REEXPORT)
    checked = [(_check_key(root, key), value) for key, value in files.items()]  # every key before any file
    blobs: dict[str, bytes] = {}
    for name, expected in checked:
        if not isinstance(expected, str) or not _HEX64.fullmatch(expected):
            raise EdgeError(f"bundle {root}: manifest.json gives {name} the checksum {expected!r}, not a sha256 "
                            "(64 lowercase hex digits).", hint=_REEXPORT)
        path = _regular_file(root, name)
        if path is None:
            raise EdgeError(f"bundle {root} is incomplete: missing {name} (or it is not a regular file).",
                            hint="Copy the whole bundle folder, or export it again.")
        try:
            if name in keep:
                blobs[name] = _read_regular(path)
                actual = hashlib.sha256(blobs[name]).hexdigest()
            else:
                actual = sha256_file(path)
        except OSError as exc:
            raise EdgeError(f"bundle {root}: {name} cannot be read ({exc}).", hint=_REEXPORT) from exc
        if actual != expected:
            raise EdgeError(f"bundle {root}: {name} is corrupt (its sha256 does not match the manifest).",
                            hint="The file was truncated or changed after export; copy or export it again.")
    return blobs


def read_bundle(bundle: str | Path, *, verify: bool = True, keep: tuple[str, ...] = (),
                expected_manifest_sha256: str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """:func:`read_manifest`, plus the bytes of the listed files named in ``keep`` exactly as they were verified
    (empty with ``verify=False``)."""
    root = Path(bundle)
    if not root.is_dir():
        raise EdgeError(f"bundle not found: {root}", hint="Pass the folder written by 'uad export'.")
    if expected_manifest_sha256 is not None and not verify:
        raise EdgeError("expected_manifest_sha256 needs verify=True.")
    missing = [name for name in PRESENT_FILES if not (root / name).is_file()]
    if missing:
        raise EdgeError(f"bundle {root} is incomplete: missing {', '.join(missing)}.",
                        hint="Copy the whole bundle folder, or export it again with 'uad export'.")
    manifest = _parse(root, verify)
    if verify:
        _check_digest(root, manifest, expected_manifest_sha256)
    bundle_input(manifest, root)
    hint = manifest.get("inference_precision_hint")
    if hint is not None and hint not in PRECISION_HINTS:
        raise EdgeError(f"bundle {root}: manifest.json inference_precision_hint is {hint!r}; expected one of "
                        f"{', '.join(PRECISION_HINTS)}.", hint=_REEXPORT)
    blobs = _check_files(root.resolve(), manifest, keep) if verify else {}
    return manifest, blobs


def read_manifest(bundle: str | Path, *, verify: bool = True,
                  expected_manifest_sha256: str | None = None) -> dict[str, Any]:
    """Read and check a bundle's manifest (see the module docstring): format version, the manifest's own checksum,
    ``files`` (plain paths inside the bundle, model.xml/model.bin/parity.json listed, hashes matching) and the
    ``input`` bounds. ``verify=False`` skips the checksums (and accepts format 1), not the structural checks.
    ``expected_manifest_sha256`` pins the bundle to the ``manifest_sha256`` recorded at export."""
    return read_bundle(bundle, verify=verify, expected_manifest_sha256=expected_manifest_sha256)[0]
