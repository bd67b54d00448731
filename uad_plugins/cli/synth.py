"""``uad synth``: run a synthesizer plugin over inputs of its modality; write the results, masks and a manifest.

The synthesizer's ``modality`` picks the handler in :data:`MODALITIES`: each one finds its input files and writes
one set of outputs per input and variant. The output folder is written whole or not at all: everything goes to a
temporary sibling first, then one rename.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uad_plugins.cli.resolve import split_prefixed_options
from uad_plugins.edge.atomic import staged_folder
from uad_plugins.errors import ConfigError, DataError

__all__ = ["MODALITIES", "synth", "synthesize_folder"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uad synth", description="Make synthetic anomalies from images, point clouds or signals with a "
        "synthesizer plugin. Options of the synthesizer are given as --synthesizer.<option> VALUE "
        "(see 'uad plugins show NAME').")
    parser.add_argument("--synthesizer", required=True,
                        help="plugin:<name>, e.g. plugin:perlin, plugin:pnas3d or plugin:ecg_anomaly")
    parser.add_argument("--input", required=True,
                        help="an image, point cloud or signal file (.npy/.csv), or a folder of them "
                        "(searched recursively)")
    parser.add_argument("--output", required=True, help="output folder (must not exist, or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; input i, variant k uses seed + i * count + k")
    parser.add_argument("--count", type=int, default=1, help="variants per input")
    parser.add_argument("--nonfinite", choices=("error", "invalid"), default=None,
                        help="point clouds: NaN/inf coordinates are an error (default) or invalid points, kept in "
                             "place as (0, 0, 0) and left untouched")
    return parser


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
    from uad_plugins.pointcloud.io import SUFFIXES, list_pointcloud_files

    files = list_pointcloud_files(input_path)
    if not files:
        raise DataError(f"no point clouds found in {input_path}",
                        hint=f"Give a point-cloud file or a folder with {'/'.join(sorted(SUFFIXES))} files.")
    return files


def _write_clouds(synthesizer: Any, files: list[Path], root: Path, tmp: Path, seed: int,
                  count: int, nonfinite: str = "error") -> list[dict[str, Any]]:
    import numpy as np
    import torch

    from uad_plugins.errors import UadError
    from uad_plugins.pointcloud.io import output_suffix, read_pointcloud, write_pointcloud
    from uad_plugins.pointcloud.render import render_preview

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


def _find_signals(input_path: str | Path) -> list[Path]:
    from uad_plugins.data.signals.synth import find_signal_files  # imported on use: the signals package loads anomalib

    return find_signal_files(input_path)


def _write_signals(synthesizer: Any, files: list[Path], root: Path, tmp: Path, seed: int,
                   count: int) -> list[dict[str, Any]]:
    from uad_plugins.data.signals.synth import write_signal_files

    return write_signal_files(synthesizer, files, root, tmp, seed, count)


# -------------------------------------------------------------------------------------------- dispatch
@dataclass(frozen=True)
class Modality:
    """How ``uad synth`` handles one modality: find the inputs, write the outputs of every input and variant
    (``write`` also takes the reading options named in ``reads`` as keywords)."""

    find: Callable[[str | Path], list[Path]]
    write: Callable[..., list[dict[str, Any]]]
    folders: str
    reads: tuple[str, ...] = ()


#: synthesizer ``modality`` -> its handler
MODALITIES: dict[str, Modality] = {
    "image": Modality(_find_images, _write_images, "images/, masks/"),
    "pointcloud": Modality(_find_clouds, _write_clouds, "clouds/, masks/, previews/", reads=("nonfinite",)),
    "signal": Modality(_find_signals, _write_signals, "signals/, masks/"),
}


def synthesize_folder(synthesizer_ref: str, input_path: str | Path, output: str | Path, *, seed: int = 0,
                      count: int = 1, nonfinite: str | None = None, **options: Any) -> dict[str, Any]:
    """Apply a synthesizer to every input of its modality under ``input_path``; return the manifest written.

    ``nonfinite`` (point clouds only): ``"error"`` (default) or ``"invalid"`` for NaN/inf coordinates; see
    :func:`~uad_plugins.pointcloud.io.read_pointcloud`. ``options`` build the synthesizer.

    Example:
        >>> synthesize_folder("plugin:pnas3d", "clouds/", "synth/", seed=0, strength=0.01)   # doctest: +SKIP
    """
    from uad_plugins.engine.run import component_record
    from uad_plugins.factory import create_synthesizer

    if count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}.")
    synthesizer = create_synthesizer(synthesizer_ref, **options)
    modality = getattr(synthesizer, "modality", "image")
    handler = MODALITIES.get(modality)
    if handler is None:
        raise ConfigError(f"{synthesizer_ref} works on {modality} data, which uad synth does not handle yet.",
                          hint=f"uad synth handles: {', '.join(MODALITIES)}.")
    reading = {"nonfinite": nonfinite} if nonfinite is not None else {}
    unused = sorted(set(reading) - set(handler.reads))
    if unused:
        raise ConfigError(f"--{unused[0]} applies to point clouds; {synthesizer_ref} works on {modality} data.",
                          hint=f"Leave --{unused[0]} out.")
    files = handler.find(input_path)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} already exists and is not empty.", hint="Choose a new --output folder.")
    root = Path(input_path) if Path(input_path).is_dir() else Path(input_path).parent
    with staged_folder(out) as tmp:
        entries = handler.write(synthesizer, files, root, tmp, seed, count, **reading)
        manifest = {"synthesizer": component_record(synthesizer, "synthesizer"), "modality": modality,
                    "options": options, **reading, "seed": seed, "count": count, "input": str(input_path),
                    "items": entries}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def synth(argv: list[str]) -> int:
    """Entry point of ``uad synth``."""
    rest, options = split_prefixed_options(argv, "synthesizer")
    args = _parser().parse_args(rest)
    manifest = synthesize_folder(args.synthesizer, args.input, args.output, seed=args.seed, count=args.count,
                                 nonfinite=args.nonfinite, **options)
    folders = MODALITIES[manifest["modality"]].folders
    print(f"{len(manifest['items'])} synthetic anomalies written to {args.output} (manifest.json, {folders})")
    return 0
