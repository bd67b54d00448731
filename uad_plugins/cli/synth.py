"""``uad synth``: run a synthesizer plugin over a folder of images; write images, masks and a manifest.

The output folder is written whole or not at all: everything goes to a temporary sibling first, then one rename.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from uad_plugins.errors import ConfigError, DataError

__all__ = ["synth", "synthesize_folder"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uad synth", description="Make synthetic anomalies from images with a synthesizer plugin. "
        "Options of the synthesizer are given as --synthesizer.<option> VALUE (see 'uad plugins show NAME').")
    parser.add_argument("--synthesizer", required=True, help="plugin:<name>, e.g. plugin:perlin")
    parser.add_argument("--input", required=True, help="an image or a folder of images (searched recursively)")
    parser.add_argument("--output", required=True, help="output folder (must not exist, or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; image i uses seed + i")
    parser.add_argument("--count", type=int, default=1, help="variants per input image")
    return parser


def _split_component_options(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    import yaml

    rest, options = [], {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--synthesizer."):
            key, eq, value = arg[len("--synthesizer."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value.")
                value = argv[i + 1]
                i += 1
            options[key] = yaml.safe_load(value)
        else:
            rest.append(arg)
        i += 1
    return rest, options


def synthesize_folder(synthesizer_ref: str, input_path: str | Path, output: str | Path, *, seed: int = 0,
                      count: int = 1, **options: Any) -> dict[str, Any]:
    """Apply a synthesizer to every image under ``input_path``; return the manifest written to ``output``."""
    import numpy as np
    import torch
    from PIL import Image

    from uad_plugins.factory import create_synthesizer

    if count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}.")
    synthesizer = create_synthesizer(synthesizer_ref, **options)

    from uad_plugins.data.checks import list_image_files, read_rgb_image
    from uad_plugins.engine.run import component_record

    if getattr(synthesizer, "modality", "image") != "image":
        raise ConfigError(f"{synthesizer_ref} works on {synthesizer.modality} data, not on images.")
    files = list_image_files(input_path)
    if not files:
        raise DataError(f"no images found in {input_path}",
                        hint="Give an image file or a folder with .png/.jpg/.jpeg/.bmp/.tif images.")
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} already exists and is not empty.", hint="Choose a new --output folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        entries = []
        root = Path(input_path) if Path(input_path).is_dir() else Path(input_path).parent
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
        manifest = {"synthesizer": component_record(synthesizer, "synthesizer"), "options": options,
                    "seed": seed, "count": count, "input": str(input_path), "items": entries}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def synth(argv: list[str]) -> int:
    """Entry point of ``uad synth``."""
    rest, options = _split_component_options(argv)
    args = _parser().parse_args(rest)
    manifest = synthesize_folder(args.synthesizer, args.input, args.output, seed=args.seed, count=args.count,
                                 **options)
    print(f"{len(manifest['items'])} synthetic anomalies written to {args.output} (manifest.json, images/, masks/)")
    return 0
