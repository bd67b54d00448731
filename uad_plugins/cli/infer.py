"""``uad infer BUNDLE INPUTS...``: score images with an exported bundle (openvino + numpy + pillow only)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

__all__ = ["infer"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uad infer", description="Score images with an exported bundle; "
                                     "writes scores.json and heatmap overlays. Needs only openvino, numpy, pillow.")
    parser.add_argument("bundle", help="bundle folder written by 'uad export'")
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    parser.add_argument("--output", required=True, help="output folder (scores.json, overlays/)")
    parser.add_argument("--resize", action="store_true", help="resize images to the bundle's input size")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, AUTO, ...)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--no_overlays", action="store_true", help="write scores only")
    return parser


def infer(argv: list[str]) -> int:
    """Entry point of ``uad infer``: everything is checked before anything is written."""
    import numpy as np
    from PIL import Image

    from uad_plugins.edge import EdgeError, list_images, load_bundle
    from uad_plugins.edge.overlay import overlay

    args = _parser().parse_args(argv)
    model = load_bundle(args.bundle, device=args.device)
    files = list_images(args.inputs)
    if not files:
        raise EdgeError(f"no images found in {' '.join(args.inputs)}.",
                        hint="Give image files or folders with .png/.jpg/.jpeg/.bmp/.tif images.")
    result = model.predict(files, resize=args.resize, batch_size=args.batch_size)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if not args.no_overlays:
            (tmp / "overlays").mkdir()
            height, width = model.input_size
            for i, file in enumerate(files):
                with Image.open(file) as im:
                    rgb = np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
                picture = overlay(rgb, result.anomaly_map[i], result.pred_mask[i])
                Image.fromarray(picture).save(tmp / "overlays" / f"{i:04d}_{file.stem}.png")
        document = {"bundle": str(Path(args.bundle).resolve()), "precision": model.manifest.get("precision"),
                    "component": (model.manifest.get("component") or {}).get("reference"),
                    "threshold": 0.5, "predictions": result.records()}
        (tmp / "scores.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_anomalous = int(result.pred_label.sum())
    print(f"{len(files)} images scored ({n_anomalous} anomalous); scores: {out / 'scores.json'}")
    return 0
