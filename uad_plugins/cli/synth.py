"""``uad synth``: run a synthesizer plugin over inputs of its modality; write the results, masks and a manifest.

A thin command over :func:`uad_plugins.synth.run.synthesize` (the one synthesis door): parse, call, print.
"""

from __future__ import annotations

import argparse

from uad_plugins.cli.resolve import split_prefixed_options

__all__ = ["synth"]


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


def synth(argv: list[str]) -> int:
    """Entry point of ``uad synth``."""
    from uad_plugins.synth.run import HANDLERS, synthesize  # imported on use: it loads torch

    rest, options = split_prefixed_options(argv, "synthesizer")
    args = _parser().parse_args(rest)
    reading = {"nonfinite": args.nonfinite} if args.nonfinite is not None else {}
    manifest = synthesize(args.synthesizer, args.input, args.output, seed=args.seed, count=args.count,
                          reading=reading, as_flags=True, **options)
    folders = HANDLERS[manifest["modality"]].folders
    print(f"{len(manifest['items'])} synthetic anomalies written to {args.output} (manifest.json, {folders})")
    return 0
