"""``uad infer BUNDLE INPUTS...``: score images or signal windows with an exported bundle (openvino + numpy + pillow
only). An image bundle reads image files; a signal bundle reads ``.npy``/``.csv`` windows (``SignalFolder`` layouts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["infer"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uad infer", description="Score images or signals with an exported bundle; "
                                     "writes scores.json and heatmap overlays (signals: one plot per window). Needs "
                                     "only openvino, numpy, pillow.")
    parser.add_argument("bundle", help="bundle folder written by 'uad export'")
    parser.add_argument("inputs", nargs="+", help="image files or folders (image bundle); .npy/.csv signal files or "
                        "folders (signal bundle: windows [K, Q], [N, Q] one lead, [N, K, Q]; CSV: one window per row)")
    parser.add_argument("--output", required=True, help="output folder (scores.json, overlays/ or plots/); must be new "
                        "or empty unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output, replacing only the "
                        "files uad infer writes (and those its previous run listed in scores.json)")
    parser.add_argument("--resize", action="store_true", help="resize images to the bundle's input size (images only)")
    parser.add_argument("--device", default="CPU", help="OpenVINO device (CPU, GPU, AUTO, ...)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--no_overlays", action="store_true", help="write scores only (no overlays or plots)")
    return parser


def _document(args: argparse.Namespace, model: Any, result: Any) -> dict[str, Any]:
    return {"bundle": str(Path(args.bundle).resolve()), "precision": model.manifest.get("precision"),
            "component": (model.manifest.get("component") or {}).get("reference"), "modality": model.modality,
            "threshold": 0.5, "predictions": result.records()}


def _infer_signals(args: argparse.Namespace, model: Any, output: Any) -> int:
    import numpy as np
    from PIL import Image

    from uad_plugins.edge import EdgeError, list_signal_files, read_signal_file, signal_plot

    if args.resize:
        raise EdgeError("--resize is for image bundles; this bundle takes signal windows of "
                        f"{model.input_size[1]} samples.", hint="Drop --resize.")
    files = list_signal_files(args.inputs)
    if not files:
        raise EdgeError(f"no signal files found in {' '.join(args.inputs)}.",
                        hint="Give .npy/.csv files or folders holding them.")
    windows, names, stems = [], [], []
    for file in files:  # every file is read and checked before anything runs or is written
        data = read_signal_file(file, model.input_size)
        windows.append(data)
        names += [str(file)] if len(data) == 1 else [f"{file}#{row}" for row in range(len(data))]
        stems += [file.stem] if len(data) == 1 else [f"{file.stem}_{row}" for row in range(len(data))]
    batch = np.concatenate(windows)
    result = model.predict(batch, batch_size=args.batch_size)
    result.sources = names

    with output.writing() as tmp:
        if not args.no_overlays:
            (tmp / "plots").mkdir()
            for i, stem in enumerate(stems):
                label = "anomalous" if result.pred_label[i] else "normal"
                title = f"{names[i]}: score {result.pred_score[i]:.3f} ({label}, threshold 0.5)"
                picture = signal_plot(batch[i], result.anomaly_map[i], result.pred_mask[i], title=title)
                Image.fromarray(picture).save(tmp / "plots" / f"{i:04d}_{stem}.png")
        output.write_document(tmp, _document(args, model, result))
    out = output.path
    print(f"{len(batch)} signal windows from {len(files)} file(s) scored ({int(result.pred_label.sum())} "
          f"anomalous); scores: {out / 'scores.json'}")
    return 0


def infer(argv: list[str]) -> int:
    """Entry point of ``uad infer``: everything is checked before anything is written."""
    import numpy as np
    from PIL import Image

    from uad_plugins.edge import EdgeError, list_images, load_bundle
    from uad_plugins.edge.output import OutputFolder
    from uad_plugins.edge.overlay import overlay

    args = _parser().parse_args(argv)
    if args.batch_size < 1:
        raise EdgeError(f"--batch_size must be at least 1, got {args.batch_size}.")
    # the output is checked first: never the bundle or an input, never a non-empty folder without --overwrite
    output = OutputFolder(args.output, document="scores.json", overwrite=args.overwrite,
                          protect=[args.bundle, *args.inputs], what="uad infer")
    model = load_bundle(args.bundle, device=args.device)
    if model.modality == "signal":
        return _infer_signals(args, model, output)
    files = list_images(args.inputs)
    if not files:
        raise EdgeError(f"no images found in {' '.join(args.inputs)}.",
                        hint="Give image files or folders with .png/.jpg/.jpeg/.bmp/.tif images.")
    result = model.predict(files, resize=args.resize, batch_size=args.batch_size)

    with output.writing() as tmp:
        if not args.no_overlays:
            (tmp / "overlays").mkdir()
            height, width = model.input_size
            for i, file in enumerate(files):
                with Image.open(file) as im:
                    rgb = np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
                picture = overlay(rgb, result.anomaly_map[i], result.pred_mask[i])
                Image.fromarray(picture).save(tmp / "overlays" / f"{i:04d}_{file.stem}.png")
        document = _document(args, model, result)
        document.pop("modality")  # image documents keep their original keys
        output.write_document(tmp, document)
    out = output.path
    n_anomalous = int(result.pred_label.sum())
    print(f"{len(files)} images scored ({n_anomalous} anomalous); scores: {out / 'scores.json'}")
    return 0
