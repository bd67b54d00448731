"""``uad export``: a checkpoint to an OpenVINO bundle, checked by the parity gate (see docs/deploy.md).

Image and signal models alike: the checkpoint's recorded datamodule, seed and validation settings rebuild the same
honest validation split as training (held-back training normals + synthetic anomalies, never test data), which the
parity gate and the INT8 re-fit use; INT8 calibrates on normal training inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from uad_plugins.edge.manifest import PRECISIONS
from uad_plugins.errors import ConfigError

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
    parser.add_argument("--seed", type=int, default=None, help="seed of the validation split (default: the run's)")
    parser.add_argument("--image_check", default="header", choices=["header", "full"],
                        help="how image files are checked: header (default) or full (every image decoded)")
    return parser


def export(argv: list[str]) -> int:
    """Entry point of ``uad export``."""
    args = _parser().parse_args(argv)
    if args.parity_samples < 1:
        raise ConfigError(f"--parity_samples must be at least 1, got {args.parity_samples}.")
    if args.calibration_samples < 1:
        raise ConfigError(f"--calibration_samples must be at least 1, got {args.calibration_samples}.")
    if not 0 <= args.max_metric_drop <= 1:
        raise ConfigError(f"--max_metric_drop must be in [0, 1] (a fraction: 0.01 = 1 point), got "
                          f"{args.max_metric_drop}.")
    from uad_plugins.cli.train import _quiet_imports

    _quiet_imports()
    from uad_plugins.edge.tempdirs import owned_tempdir
    from uad_plugins.engine import UadEngine
    from uad_plugins.engine.checkpoint import load_checkpoint
    from uad_plugins.engine.run import component_record, find_run_dir
    from uad_plugins.export import export_bundle, take_samples
    from uad_plugins.export.graph import input_size_of, modality_of
    from uad_plugins.export.samples import describe_signal_preparation

    expected = None
    if args.model:
        from uad_plugins.factory import get_spec

        spec = get_spec("model", args.model, flag="--model")
        expected = spec.class_path if spec is not None else args.model
    # the model class, data and validation synthesizer the checkpoint names are checked before anything is built
    model, record = load_checkpoint(args.ckpt_path, expected_class_path=expected)
    if not record.data:
        raise ConfigError(f"checkpoint {args.ckpt_path} does not record its data, which export needs for the "
                          "parity gate and calibration.", hint="Export a checkpoint written by 'uad fit'.")
    run_dir = find_run_dir(args.ckpt_path)
    output = Path(args.output) if args.output else (run_dir or Path(args.ckpt_path).parent) / \
        f"bundle_{args.precision}"
    seed = args.seed if args.seed is not None else int(record.seed or 0)
    datamodule = record.build_datamodule()
    size = input_size_of(model)
    signal = modality_of(model) == "signal"
    # $TMPDIR/uad_export_*, marked with our PID; the stale ones of killed exports are removed first
    with owned_tempdir("uad_export_") as work:
        # no recorded synthesizer: the engine takes the datamodule's default (perlin for images, ecg_anomaly for
        # signals), as 'uad fit' did
        engine = UadEngine(default_root_dir=work, seed=seed, heatmaps=False, image_check=args.image_check,
                           validation_synthesizer=record.validation_synthesizer,
                           validation_ratio=record.validation_ratio)
        engine.open_run(model, datamodule, run_dir=work)
        engine.prepare_data(datamodule, "fit")
        validation = take_samples(datamodule.val_data, size, None, source="validation")
        calibration = take_samples(datamodule.train_data, size, args.calibration_samples, source="train",
                                   normal_only=True) if args.precision == "int8" else None
        provenance = {"component": component_record(model, "model"), "plugins": list(record.plugins),
                      "checkpoint": str(Path(args.ckpt_path).resolve())}
        if signal:
            provenance["data"] = record.data
        manifest = export_bundle(model, output, precision=args.precision, validation=validation,
                                 calibration=calibration, parity_samples=args.parity_samples,
                                 max_metric_drop=args.max_metric_drop, overwrite=args.overwrite,
                                 provenance=provenance, threshold=(record.threshold, record.false_alarm_rate),
                                 input_preparation=describe_signal_preparation(datamodule) if signal else None,
                                 progress=lambda msg: print(f"[export] {msg}", flush=True))
    parity = manifest["parity"]
    if parity["mode"] == "outputs":
        print(f"parity: max |score diff| {parity['max_score_diff']:.2e}, max |map diff| {parity['max_map_diff']:.2e}, "
              f"labels agree {parity['label_agreement']:.0%} on {parity['samples']} samples")
    else:
        for name, values in parity["metrics"].items():
            print(f"parity: {name} eager {values['eager']:.4f} -> int8 {values['int8']:.4f} "
                  f"(drop {values['drop'] * 100:.2f} points)")
    print(f"bundle: {output}")
    return 0
