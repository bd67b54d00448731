"""``uad infer BUNDLE INPUTS...`` (and ``uad-edge infer``, the same code): score images or signal windows with an
exported bundle (openvino + numpy + pillow only). An image bundle reads image files, folders, globs and lists; a
signal bundle reads ``.npy``/``.csv`` windows (``SignalFolder`` layouts).

``--format json`` (the default) writes ``scores.json`` at the end, whole or not at all, and stops at the first bad
input (exit 2). ``--format jsonl|csv`` streams: rows are appended a chunk at a time, ``--resume`` continues, a bad
input gets an error row and the run goes on. Exit status: 0 every input scored; 2 a bad invocation (nothing scored),
or a run that finished with some error rows (one block on stderr names how many and where: the ``error`` column);
130 interrupted (rows written so far are whole; ``--resume`` continues).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["PARTIAL_EXIT", "infer"]

#: exit status of a streaming run that finished with some error rows (bad input: the project's status 2)
PARTIAL_EXIT = 2


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Score images or signals with an exported bundle; "
                                     "writes scores.json and heatmap overlays (signals: one plot per window). Needs "
                                     "only openvino, numpy, pillow.")
    parser.add_argument("bundle", help="bundle folder written by 'uad export'")
    parser.add_argument("inputs", nargs="*", help="image files, folders, quoted glob patterns ('shots/**/*.png') or "
                        "@LIST files (one path a line) (image bundle); .npy/.csv signal files or folders (signal "
                        "bundle: windows [K, Q], [N, Q] one lead, [N, K, Q]; CSV: one window per row)")
    parser.add_argument("--list", action="append", default=[], metavar="FILE", help="a file listing image paths, one "
                        "a line (as @FILE; repeatable)")
    parser.add_argument("--output", required=True, help="output folder (scores.json|jsonl|csv, overlays/ or plots/); "
                        "must be new or empty unless --overwrite or --resume")
    parser.add_argument("--format", default="json", choices=("json", "jsonl", "csv"), help="json: scores.json written "
                        "whole at the end (default); jsonl/csv: one row per image appended as results come, "
                        "resumable, a bad image gets an error row (image bundles)")
    parser.add_argument("--resume", action="store_true", help="jsonl/csv: continue the run in --output, skipping the "
                        "images it already holds a row for")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output, replacing only the "
                        "files uad infer writes (and those its previous run listed)")
    parser.add_argument("--requests", type=int, default=None, help="infer requests in flight (default: OpenVINO's "
                        "optimal number for the throughput hint)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
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

    from uad_edge import EdgeError, list_signal_files, read_signal_file, signal_plot

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


def _overlay(file: Path, model: Any, result: Any) -> Any:
    """The heatmap overlay of one scored image file (the file re-read at the bundle's input size)."""
    import numpy as np
    from PIL import Image

    from uad_edge.overlay import overlay

    height, width = model.input_size
    with Image.open(file) as im:
        rgb = np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
    return Image.fromarray(overlay(rgb, result.anomaly_map, result.pred_mask))


def _overlay_name(source: str) -> str:
    """A stable overlay file name for an input: its stem and a short hash of its path (order-free, for resume)."""
    digest = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"overlays/{Path(source).stem[:80]}_{digest}.png"


def _infer_document(args: argparse.Namespace, model: Any, files: list[str], output: Any) -> int:
    """``--format json``: every input scored, then scores.json and the overlays land whole (a bad input: exit 2)."""
    records = []
    with output.writing() as tmp:
        if not args.no_overlays:
            (tmp / "overlays").mkdir()
        for i, result in enumerate(model.predict_iter(files, batch_size=args.batch_size, resize=args.resize,
                                                      requests=args.requests, maps=not args.no_overlays)):
            records.append(result.record())
            if not args.no_overlays:
                _overlay(Path(files[i]), model, result).save(tmp / "overlays" / f"{i:04d}_{Path(files[i]).stem}.png")
        document = {"bundle": str(Path(args.bundle).resolve()), "precision": model.manifest.get("precision"),
                    "component": (model.manifest.get("component") or {}).get("reference"), "threshold": 0.5,
                    "predictions": records}
        output.write_document(tmp, document)
    n_anomalous = sum(bool(r["pred_label"]) for r in records)
    print(f"{len(files)} images scored ({n_anomalous} anomalous); scores: {output.path / 'scores.json'}")
    return 0


def _infer_stream(args: argparse.Namespace, model: Any, files: list[str], protect: list[str]) -> int:
    """``--format jsonl|csv``: rows appended a chunk at a time; bad inputs get error rows; ``--resume``."""
    from uad_edge.atomic import atomic_path
    from uad_edge.manifest import manifest_digest
    from uad_edge.progress import Progress
    from uad_edge.results import open_results

    out = Path(args.output)
    run = {"bundle": str(Path(args.bundle).resolve()), "manifest_sha256": manifest_digest(model.manifest),
           "precision": model.manifest.get("precision"), "resize": bool(args.resize), "threshold": 0.5,
           "overlays": not args.no_overlays}
    results, previous = open_results(out, args.format, run, resume=args.resume, overwrite=args.overwrite,
                                     protect=protect)
    done = {row["image"] for row in previous}
    todo = [f for f in files if f not in done]
    failed_before = sum(row.get("error") is not None for row in previous)
    if previous:
        print(f"resuming: {len(previous)} row(s) already in {results.path} ({len(files) - len(todo)} of the "
              f"{len(files)} inputs), {len(todo)} to score", file=sys.stderr)
    if not args.no_overlays:
        (out / "overlays").mkdir(exist_ok=True)
    progress = Progress(len(todo), enabled=not args.quiet)
    stream = model.predict_iter(todo, batch_size=args.batch_size, resize=args.resize, requests=args.requests,
                                maps=not args.no_overlays, on_error="record")
    chunk: list[dict[str, Any]] = []
    written = failed = 0
    try:
        for result in stream:
            row = {**result.record(), "heatmap": None}
            if result.ok and not args.no_overlays:
                row["heatmap"] = _overlay_name(result.source)
                try:
                    picture = _overlay(Path(result.source), model, result)
                    with atomic_path(out / row["heatmap"], suffix=".png") as tmp:
                        picture.save(tmp, format="PNG")
                except OSError as exc:  # the image changed under us, or the disk is full: this row only
                    row.update(heatmap=None, error=f"overlay not written: {exc}")
            chunk.append(row)
            if len(chunk) >= args.batch_size:
                results.append(chunk)
                bad = sum(r.get("error") is not None for r in chunk)
                written, failed = written + len(chunk), failed + bad
                progress.update(len(chunk), bad)
                chunk = []
        results.append(chunk)
        bad = sum(r.get("error") is not None for r in chunk)
        written, failed = written + len(chunk), failed + bad
        progress.update(len(chunk), bad)
    except KeyboardInterrupt:
        stream.close()
        print(f"\ninterrupted: {len(previous) + written} complete row(s) in {results.path}; run the same command "
              "with --resume to continue.", file=sys.stderr)
        return 130
    progress.close()
    total_failed = failed_before + failed
    print(f"{len(previous) + written} rows in {results.path} ({written} new, {progress.rate():.1f} images/s); "
          f"{total_failed} failed" + (" (see the error column)" if total_failed else ""))
    if not total_failed:
        return 0
    print(f"error: {total_failed} input(s) could not be scored; the other rows of {results.path} are complete.\n"
          "  why: each failed row's 'error' column says what was wrong with that file.\n"
          "  what to do: fix or remove those files and score them into another output (failed rows are final on "
          "--resume).", file=sys.stderr)
    return PARTIAL_EXIT


def infer(argv: list[str], prog: str = "uad infer") -> int:
    """Entry point of ``uad infer`` and ``uad-edge infer`` (``prog``, for usage and messages): the invocation
    (output, bundle, inputs) is checked before anything is scored."""
    from uad_edge import EdgeError, load_bundle
    from uad_edge.inputs import expand_inputs
    from uad_edge.output import OutputFolder

    args = _parser(prog).parse_args(argv)
    if args.batch_size < 1:
        raise EdgeError(f"--batch_size must be at least 1, got {args.batch_size}.")
    if args.requests is not None and args.requests < 1:
        raise EdgeError(f"--requests must be at least 1, got {args.requests}.")
    if not args.inputs and not args.list:
        raise EdgeError(f"{prog}: no inputs given.", hint="Give image files, folders, glob patterns or --list FILE.")
    streaming = args.format != "json"
    if args.resume and not streaming:
        raise EdgeError("--resume continues a streaming run: it needs --format jsonl or csv.",
                        hint="Add --format jsonl (or csv); scores.json is written whole at the end.")
    output = None
    if not streaming:  # the output is checked first: never the bundle or an input, never non-empty w/o --overwrite
        output = OutputFolder(args.output, document="scores.json", overwrite=args.overwrite,
                              protect=[args.bundle, *args.inputs, *args.list], what=prog)
    model = load_bundle(args.bundle, device=args.device)
    if model.modality == "signal":
        if streaming or args.list:
            raise EdgeError("--format jsonl/csv and --list are for image bundles; a signal bundle writes scores.json.",
                            hint="Drop them, or give an image bundle.")
        return _infer_signals(args, model, output)
    files, protect = expand_inputs(args.inputs, args.list)
    if not files:
        raise EdgeError(f"no images found in {' '.join([*args.inputs, *args.list])}.",
                        hint="Give image files or folders with .png/.jpg/.jpeg/.bmp/.tif images.")
    if streaming:
        return _infer_stream(args, model, files, [args.bundle, *protect])
    return _infer_document(args, model, files, output)
