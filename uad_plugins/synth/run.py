"""The one synthesis door: run a synthesizer over the input files of its modality; write results, masks, manifest.

:func:`synthesize` is what ``uad synth`` calls, for images, point clouds and signals alike. The synthesizer's
``modality`` (:func:`uad_plugins.protocols.modality_of`) picks its handler in :data:`HANDLERS`: the handler finds
the input files and writes one set of outputs per input and variant. The output folder is written whole or not at
all: everything goes to a temporary sibling first, then one rename.

```
OUTPUT/manifest.json   synthesizer, modality, options, seeds, and one entry per output
OUTPUT/images/, masks/                  image synthesizers (PNG)
OUTPUT/clouds/, masks/, previews/       point-cloud synthesizers (the input's format, .npy masks, PNG previews)
OUTPUT/signals/, masks/                 signal synthesizers (.npy, see uad_plugins.data.signals.synth)
```

Layering: this module sits above the engine (it imports the factory and the run records); the per-modality readers
and writers it calls live in :mod:`uad_plugins.data` and import nothing above it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uad_edge.atomic import staged_folder
from uad_plugins.errors import ConfigError, DataError, UadError
from uad_plugins.factory import create_synthesizer
from uad_plugins.protocols import modality_of
from uad_plugins.provenance import component_record, spec_of

__all__ = ["HANDLERS", "SynthesisHandler", "synthesize", "synthesize_signal_files"]


# ------------------------------------------------------------------------------------------------ images
def _find_images(input_path: str | Path) -> list[Path]:
    from uad_plugins.data.checks import list_image_files

    files = list_image_files(input_path)
    if not files:
        raise DataError(f"no images found in {input_path}",
                        hint="Give an image file or a folder with .png/.jpg/.jpeg/.bmp/.tif images.")
    return files


def _write_images(synthesizer: Any, files: list[Path], root: Path, tmp: Path, seed: int,
                  count: int) -> list[dict[str, Any]]:
    import numpy as np
    import torch
    from PIL import Image

    from uad_plugins.data.checks import read_rgb_image

    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    entries = []
    for i, file in enumerate(files):
        image = torch.from_numpy(read_rgb_image(file)).permute(2, 0, 1).float() / 255.0
        for k in range(count):
            item_seed = seed + i * count + k
            perturbed, mask = synthesizer(image, seed=item_seed)
            stem = "_".join(file.relative_to(root).with_suffix("").parts)
            name = f"{stem}_{k:02d}" if count > 1 else stem
            img_u8 = (perturbed.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            mask_u8 = ((mask.reshape(mask.shape[-2:]).numpy() > 0.5) * 255).astype(np.uint8)
            Image.fromarray(img_u8).save(tmp / "images" / f"{name}.png")
            Image.fromarray(mask_u8).save(tmp / "masks" / f"{name}_mask.png")
            entries.append({"source": str(file), "image": f"images/{name}.png", "mask": f"masks/{name}_mask.png",
                            "seed": item_seed, "anomaly_fraction": round(float((mask_u8 > 0).mean()), 6)})
    return entries


# ------------------------------------------------------------------------------------------ point clouds
def _find_clouds(input_path: str | Path) -> list[Path]:
    from uad_plugins.data.pointcloud.io import SUFFIXES, list_pointcloud_files

    files = list_pointcloud_files(input_path)
    if not files:
        raise DataError(f"no point clouds found in {input_path}",
                        hint=f"Give a point-cloud file or a folder with {'/'.join(sorted(SUFFIXES))} files.")
    return files


def _write_clouds(synthesizer: Any, files: list[Path], root: Path, tmp: Path, seed: int,
                  count: int, nonfinite: str = "error") -> list[dict[str, Any]]:
    import numpy as np
    import torch

    from uad_plugins.data.pointcloud.io import output_suffix, read_pointcloud, write_pointcloud
    from uad_plugins.data.pointcloud.render import render_preview

    for folder in ("clouds", "masks", "previews"):
        (tmp / folder).mkdir()
    entries, used = [], set()
    for i, file in enumerate(files):
        cloud = read_pointcloud(file, nonfinite=nonfinite)
        sample = torch.from_numpy(cloud.organised if cloud.grid_shape else cloud.points)
        stem = "_".join(file.relative_to(root).with_suffix("").parts)
        stem = f"{stem}_{file.suffix[1:].lower()}" if stem in used else stem  # a.ply next to a.pcd
        used.add(stem)
        for k in range(count):
            item_seed = seed + i * count + k
            try:
                perturbed, mask = synthesizer(sample, seed=item_seed)
            except DataError as exc:
                raise DataError(f"{file}: {exc.message}", hint=exc.hint) from exc
            if tuple(perturbed.shape) != tuple(sample.shape) or mask.numel() != cloud.n_points:
                raise UadError(f"{type(synthesizer).__name__} returned points {tuple(perturbed.shape)} and mask "
                               f"{tuple(mask.shape)} for a cloud {tuple(sample.shape)}.",
                               hint="A point-cloud synthesizer keeps the shape and order of the points.")
            out = cloud.with_points(perturbed.numpy())
            flat = mask.numpy().reshape(-1) > 0.5
            name = f"{stem}_{k:02d}" if count > 1 else stem
            suffix = output_suffix(cloud)
            write_pointcloud(out, tmp / "clouds" / f"{name}{suffix}")
            np.save(tmp / "masks" / f"{name}_mask.npy", flat.reshape(cloud.grid_shape) if cloud.grid_shape else flat)
            valid = cloud.valid
            render_preview(out.points, flat, tmp / "previews" / f"{name}.png", grid_shape=cloud.grid_shape,
                           valid=valid, title=f"{name} (seed {item_seed})")
            entries.append({
                "source": str(file), "cloud": f"clouds/{name}{suffix}", "mask": f"masks/{name}_mask.npy",
                "preview": f"previews/{name}.png", "seed": item_seed, "format": suffix[1:],
                "grid_shape": list(cloud.grid_shape) if cloud.grid_shape else None, "n_points": cloud.n_points,
                "n_valid": int(valid.sum()), "n_anomalous": int(flat.sum()),
                "anomaly_fraction": round(float(flat[valid].mean()) if valid.any() else 0.0, 6)})
    return entries


# ----------------------------------------------------------------------------------------------- signals
def _find_signals(input_path: str | Path) -> list[Path]:
    from uad_plugins.data.signals.synth import find_signal_files  # imported on use: the signals package loads anomalib

    return find_signal_files(input_path)


def _write_signals(synthesizer: Any, files: list[Path], root: Path, tmp: Path, seed: int, count: int,
                   n_leads: int | None = None) -> list[dict[str, Any]]:
    from uad_plugins.data.signals.synth import write_signal_files

    return write_signal_files(synthesizer, files, root, tmp, seed, count, n_leads)


# -------------------------------------------------------------------------------------------- dispatch
@dataclass(frozen=True)
class SynthesisHandler:
    """How :func:`synthesize` handles one modality: find the inputs, write the outputs of every input and variant
    (``write`` also takes the reading options named in ``reads`` as keywords)."""

    find: Callable[[str | Path], list[Path]]
    write: Callable[..., list[dict[str, Any]]]
    #: the folders it writes, as ``uad synth`` lists them
    folders: str
    #: what it reads, in an error message ("not on <inputs>")
    inputs: str
    #: a synthesizer of this modality, for hints
    example: str
    reads: tuple[str, ...] = ()


#: synthesizer ``modality`` -> its handler
HANDLERS: dict[str, SynthesisHandler] = {
    "image": SynthesisHandler(_find_images, _write_images, "images/, masks/", "images", "plugin:perlin"),
    "pointcloud": SynthesisHandler(_find_clouds, _write_clouds, "clouds/, masks/, previews/", "point clouds",
                                   "plugin:pnas3d", reads=("nonfinite",)),
    "signal": SynthesisHandler(_find_signals, _write_signals, "signals/, masks/", "signals", "plugin:ecg_anomaly",
                               reads=("n_leads",)),
}


def _label(reference: Any, synthesizer: Any) -> str:
    """How error messages name the synthesizer: the reference it was built from, else its class."""
    if isinstance(reference, str):
        return reference
    spec = spec_of(synthesizer, "synthesizer")
    return spec.reference if spec is not None else type(synthesizer).__name__


def synthesize(synthesizer: Any, inputs: str | Path, output: str | Path, *, seed: int = 0, count: int = 1,
               modality: str | None = None, reading: Mapping[str, Any] | None = None, as_flags: bool = False,
               **options: Any) -> dict[str, Any]:
    """Apply a synthesizer to every input of its modality at ``inputs`` (a file, or a folder searched
    recursively); input ``i`` variant ``k`` uses seed ``seed + i * count + k``. Returns the manifest, also written
    to ``output/manifest.json``; ``output`` (new or empty) is written whole or not at all.

    Args:
        synthesizer: a built synthesizer, or a reference (``plugin:<name>``, dotted class path, or mapping)
            built with ``options`` by :func:`uad_plugins.factory.create_synthesizer`.
        modality: the modality the caller expects (ConfigError for a synthesizer of another one).
        reading: how the handler reads its inputs, recorded in the manifest as given: point clouds take
            ``nonfinite`` (``"error"`` or ``"invalid"``, see :func:`uad_plugins.data.pointcloud.io.read_pointcloud`),
            signals take ``n_leads`` (``None``: a 2-D ``.npy`` is one ``[K, Q]`` sample).
        as_flags: name ``count``, ``output`` and the reading options as ``uad synth``'s flags in error messages.
        options: the synthesizer's options (only with a reference).

    Example:
        >>> synthesize("plugin:pnas3d", "clouds/", "synth/", seed=0, strength=0.01)   # doctest: +SKIP
    """
    flag = "--" if as_flags else ""
    if count < 1:
        raise ConfigError(f"{flag}count must be at least 1, got {count}.")
    reference = synthesizer
    if isinstance(synthesizer, (str, Mapping)):
        synthesizer = create_synthesizer(synthesizer, **options)
    elif options:
        raise ConfigError("options are only used with a synthesizer reference, not an instance.")
    kind = modality_of(synthesizer)
    if modality is not None and kind != modality:
        expected = HANDLERS[modality]
        raise ConfigError(f"{type(synthesizer).__name__} works on {kind} data, not on {expected.inputs}.",
                          hint=f"Use a {modality} synthesizer, e.g. {expected.example}.")
    name = _label(reference, synthesizer)
    handler = HANDLERS.get(kind)
    if handler is None:
        raise ConfigError(f"{name} works on {kind} data, which uad synth does not handle yet.",
                          hint=f"uad synth handles: {', '.join(HANDLERS)}.")
    reading = dict(reading or {})
    unused = sorted(set(reading) - set(handler.reads))
    if unused:
        owner = next((h.inputs for h in HANDLERS.values() if unused[0] in h.reads), "other data")
        raise ConfigError(f"{flag}{unused[0]} applies to {owner}; {name} works on {kind} data.",
                          hint=f"Leave {flag}{unused[0]} out.")
    files = handler.find(inputs)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} already exists and is not empty.",
                          hint=f"Choose a new {flag}output folder.")
    root = Path(inputs) if Path(inputs).is_dir() else Path(inputs).parent
    with staged_folder(out) as tmp:
        entries = handler.write(synthesizer, files, root, tmp, seed, count, **reading)
        manifest = {"synthesizer": component_record(synthesizer, "synthesizer"), "modality": kind,
                    "options": options, **reading, "seed": seed, "count": count, "input": str(inputs),
                    "items": entries}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return manifest


def synthesize_signal_files(synthesizer: Any, inputs: str | Path, output: str | Path, *, seed: int = 0,
                            count: int = 1, n_leads: int | None = None, **options: Any) -> dict[str, Any]:
    """:func:`synthesize` for a signal synthesizer over ``.npy``/``.csv`` files: sample ``j`` variant ``k`` uses
    seed ``seed + j * count + k``; ``n_leads=None`` reads a 2-D ``.npy`` as one ``[K, Q]`` sample.

    Example:
        >>> synthesize_signal_files("plugin:ecg_anomaly", "normals/", "synthetic/", seed=0, count=2)  # doctest: +SKIP
    """
    return synthesize(synthesizer, inputs, output, seed=seed, count=count, modality="signal",
                      reading={"n_leads": n_leads}, **options)
