"""``uad export``: a checkpoint to an OpenVINO bundle, checked by the parity gate (see docs/deploy.md).

Image and signal models alike: the checkpoint's recorded datamodule, seed and validation settings rebuild the same
honest validation split as training (held-back training normals + synthetic anomalies, never test data), which the
parity gate and the INT8 re-fit use; INT8 calibrates on normal training inputs.
"""

from __future__ import annotations

import argparse

from uad_edge.manifest import PRECISIONS

__all__ = ["export"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uad export", description="Export a checkpoint to an OpenVINO bundle (IR with pre- and "
        "post-processing, manifest.json, parity.json). The bundle is written only if the parity gate passes.")
    parser.add_argument("--ckpt_path", required=True, help="model.ckpt of a 'uad fit' run")
    parser.add_argument("--model", default=None,
                        help="plugin:<name> the checkpoint must hold (a safety check; default: whatever it holds)")
    parser.add_argument("--format", default="openvino", choices=["openvino"], help="export format")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="weights precision")
    parser.add_argument("--output", default=None, help="bundle folder (default: RUN/bundle_<precision>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing bundle folder (only a folder holding a uad bundle, nothing else)")
    parser.add_argument("--parity_samples", type=int, default=16, help="validation samples for the parity gate")
    parser.add_argument("--calibration_samples", type=int, default=64,
                        help="normal training images (signal windows) for INT8 calibration")
    parser.add_argument("--max_metric_drop", type=float, default=0.01,
                        help="INT8: largest allowed drop of image/pixel AUROC (signals: sample/point AUROC) on "
                        "validation (0.01 = 1 point)")
    parser.add_argument("--int8_strategy", default="accuracy_control",
                        help="INT8: accuracy_control (default: the interior convolutions and the matrix products; "
                        "NNCF returns the operations that cost the most validation AUROC to floating point until "
                        "the drop fits --max_metric_drop), backbone (the interior convolutions only) or ptq "
                        "(quantize everything); docs/deploy.md")
    parser.add_argument("--seed", type=int, default=None, help="seed of the validation split (default: the run's)")
    parser.add_argument("--layout", default="bundle", choices=["bundle", "ovms"],
                        help="ovms: also write OVMS_REPO/NAME/VERSION/model.xml|bin (OpenVINO Model Server's model "
                        "repository) from the gated bundle, at the next free version")
    parser.add_argument("--ovms_repo", default=None, help="OVMS model repository (default: 'ovms' beside the bundle)")
    parser.add_argument("--ovms_name", default=None, help="OVMS model name (default: the bundle folder's name)")
    parser.add_argument("--image_check", default="header", choices=["header", "full"],
                        help="how image files are checked: header (default) or full (every image decoded)")
    anomalib = parser.add_argument_group("anomalib's names (aliases of the options above)")
    anomalib.add_argument("--export_type", default=None, help="openvino (= --format openvino)")
    anomalib.add_argument("--compression_type", default=None,
                          help=f"{', '.join(COMPRESSION_TYPES)}: fp16 = --precision fp16; int8_ptq = --precision int8 "
                          "--int8_strategy ptq; int8_acq = --precision int8 --int8_strategy accuracy_control")
    anomalib.add_argument("--export_root", default=None,
                          help="folder the bundle goes into, as bundle_<precision> (= --output "
                          "EXPORT_ROOT/bundle_<precision>)")
    return parser


#: anomalib's ``--compression_type`` -> (our precision, our INT8 strategy or None)
COMPRESSION_TYPES = {"fp16": ("fp16", None), "int8_ptq": ("int8", "ptq"), "int8_acq": ("int8", "accuracy_control")}


def _apply_anomalib_names(args: argparse.Namespace, argv: list[str]) -> None:
    """Turn anomalib's ``--export_type``, ``--compression_type`` and ``--export_root`` into our options (a clash
    with our own spelling of the same option is an error)."""
    from pathlib import Path

    from uad_plugins.errors import ConfigError

    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    if args.export_type is not None:
        if args.export_type.lower() != "openvino":
            raise ConfigError(f"--export_type {args.export_type}: uad exports OpenVINO bundles only (checked by the "
                              "parity gate; the edge runtime and the server read them).",
                              hint="Use --export_type openvino (or leave it out).")
        args.format = "openvino"
    if args.compression_type is not None:
        key = args.compression_type.lower()
        if key not in COMPRESSION_TYPES:
            hint = "Use one of: " + ", ".join(COMPRESSION_TYPES) + "."
            if key == "int8":
                hint = ("anomalib's int8 compresses the weights only; uad quantizes weights and activations and "
                        "checks the result: use int8_acq (accuracy-controlled) or int8_ptq.")
            raise ConfigError(f"--compression_type {args.compression_type} is not offered.", hint=hint)
        precision, strategy = COMPRESSION_TYPES[key]
        if "--precision" in given and args.precision != precision:
            raise ConfigError(f"--compression_type {key} and --precision {args.precision} disagree.",
                              hint="Give one of them.")
        args.precision = precision
        if strategy is not None:
            if "--int8_strategy" in given and args.int8_strategy != strategy:
                raise ConfigError(f"--compression_type {key} and --int8_strategy {args.int8_strategy} disagree.",
                                  hint="Give one of them.")
            args.int8_strategy = strategy
    if args.export_root is not None:
        if args.output is not None:
            raise ConfigError("--export_root and --output both say where the bundle goes.", hint="Give one of them.")
        args.output = str(Path(args.export_root) / f"bundle_{args.precision}")


def export(argv: list[str]) -> int:
    """Entry point of ``uad export``: parse, call :func:`uad_plugins.export.export_checkpoint`, print."""
    args = _parser().parse_args(argv)
    _apply_anomalib_names(args, argv)
    from uad_plugins.export.checkpoint import check_export_options

    check_export_options(parity_samples=args.parity_samples, calibration_samples=args.calibration_samples,
                         max_metric_drop=args.max_metric_drop,
                         int8_strategy=args.int8_strategy)  # before the checkpoint is read
    from uad_plugins.cli.quiet import quiet_imports

    quiet_imports()
    from uad_plugins.export import export_checkpoint

    bundle = export_checkpoint(args.ckpt_path, args.output, precision=args.precision, expected_model=args.model,
                               seed=args.seed, parity_samples=args.parity_samples,
                               calibration_samples=args.calibration_samples, max_metric_drop=args.max_metric_drop,
                               overwrite=args.overwrite, image_check=args.image_check, layout=args.layout,
                               ovms_repo=args.ovms_repo, ovms_name=args.ovms_name,
                               int8_strategy=args.int8_strategy,
                               progress=lambda msg: print(f"[export] {msg}", flush=True))
    parity = bundle.manifest["parity"]
    if parity["mode"] == "outputs":
        print(f"parity: max |score diff| {parity['max_score_diff']:.2e}, max |map diff| {parity['max_map_diff']:.2e}, "
              f"labels agree {parity['label_agreement']:.0%} on {parity['samples']} samples")
    else:
        for name, values in parity["metrics"].items():
            print(f"parity: {name} eager {values['eager']:.4f} -> int8 {values['int8']:.4f} "
                  f"(drop {values['drop'] * 100:.2f} points)")
    print(f"bundle: {bundle.path}")
    if bundle.ovms is not None:
        print(f"OVMS: {bundle.ovms.path} (version {bundle.ovms.version}); serve it with:\n  {bundle.ovms.command()}")
    return 0
