"""The one export door: a checkpoint written by ``uad fit`` to an OpenVINO bundle.

``uad export``, ``uad bench`` and the conformance kit all come through :func:`export_checkpoint`. It reads the
checkpoint once (:func:`~uad_plugins.engine.checkpoint.load_checkpoint`: the model and the checked record of its
run), rebuilds the run's honest validation split (held-back training normals + synthetic anomalies, never test
data) from the recorded data, seed and validation settings, takes the parity and calibration samples, and hands
the model to :func:`~uad_plugins.export.bundle.export_bundle` (convert, quantize, gate, write whole).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uad_plugins.errors import ConfigError, DataError

__all__ = ["ExportedBundle", "default_bundle_path", "export_checkpoint"]


@dataclass(frozen=True)
class ExportedBundle:
    """Where a bundle was written, and its manifest (``manifest["parity"]`` holds the gate's verdict)."""

    path: Path
    manifest: dict[str, Any]
    #: with ``layout="ovms"``: the OVMS version written from the bundle (:class:`~uad_edge.ovms.OvmsModel`)
    ovms: Any = None


def default_bundle_path(ckpt_path: str | Path, precision: str) -> Path:
    """``RUN/bundle_<precision>`` for a checkpoint inside a run folder, else beside the checkpoint."""
    from uad_plugins.engine.run import find_run_dir

    run_dir = find_run_dir(ckpt_path)
    return (run_dir or Path(ckpt_path).parent) / f"bundle_{precision}"


def check_export_options(*, parity_samples: int, calibration_samples: int, max_metric_drop: float,
                         int8_strategy: str = "accuracy_control") -> None:
    """Refuse sample counts and metric budgets that cannot work, before anything is read."""
    if parity_samples < 1:
        raise ConfigError(f"--parity_samples must be at least 1, got {parity_samples}.")
    if calibration_samples < 1:
        raise ConfigError(f"--calibration_samples must be at least 1, got {calibration_samples}.")
    if not 0 <= max_metric_drop <= 1:
        raise ConfigError(f"--max_metric_drop must be in [0, 1] (a fraction: 0.01 = 1 point), got "
                          f"{max_metric_drop}.")
    from uad_edge.manifest import INT8_STRATEGIES

    if int8_strategy not in INT8_STRATEGIES:
        raise ConfigError(f"unknown --int8_strategy {int8_strategy!r}.",
                          hint=f"Choose one of: {', '.join(INT8_STRATEGIES)} (see docs/deploy.md, INT8).")


def export_checkpoint(ckpt_path: str | Path, output: str | Path | None = None, *, precision: str = "fp32",
                      expected_model: str | None = None, datamodule: Any = None, seed: int | None = None,
                      parity_samples: int = 16, calibration_samples: int = 64, max_metric_drop: float = 0.01,
                      overwrite: bool = False, image_check: str = "header",
                      provenance: Mapping[str, Any] | None = None, layout: str = "bundle",
                      ovms_repo: str | Path | None = None, ovms_name: str | None = None,
                      int8_strategy: str = "accuracy_control",
                      progress: Callable[[str], None] = print) -> ExportedBundle:
    """Export the model of ``ckpt_path`` to an OpenVINO bundle, written only if the parity gate passes.

    Args:
        ckpt_path: a ``model.ckpt`` written by ``uad fit`` (or by :class:`~uad_plugins.engine.UadEngine`).
        output: the bundle folder (default: :func:`default_bundle_path`).
        precision: ``fp32``, ``fp16`` or ``int8`` (INT8 calibrates on normal training inputs and re-fits the
            thresholds on validation).
        expected_model: ``plugin:<name>`` or a class path the checkpoint must hold (a safety check).
        datamodule: a datamodule already set up with this run's honest validation split (``uad bench`` and the
            conformance kit have one); default: the checkpoint's recorded data, set up here as the fit did.
        seed: seed of the rebuilt validation split (default: the run's).
        parity_samples: validation samples the parity gate compares on.
        calibration_samples: normal training inputs for INT8 calibration.
        max_metric_drop: INT8: the largest allowed drop of image/pixel (sample/point) AUROC on validation.
        int8_strategy: INT8: ``accuracy_control`` (default), ``ptq`` or ``backbone``
            (:mod:`uad_plugins.export.quantize`).
        overwrite: replace an existing bundle folder (only a folder holding a uad bundle).
        image_check: how image files are checked while the data are set up (``header`` or ``full``).
        provenance: more fields for the manifest (``uad bench`` names its recipe).
        layout: ``bundle``, or ``ovms`` to also write ``<ovms_repo>/<ovms_name>/<version>/model.xml|bin`` from
            the gated bundle (the next free version; default repo: ``ovms`` beside the bundle, default name: the
            bundle folder's name), the model repository OpenVINO Model Server loads.
        progress: where progress lines go.

    Raises:
        UadError: a checkpoint that cannot be read or trusted, data that cannot be rebuilt, a failed gate
            (:class:`~uad_plugins.export.graph.ExportError`); nothing is written then.
    """
    from uad_edge.ovms import check_ovms_target, write_ovms_layout
    from uad_edge.tempdirs import owned_tempdir
    from uad_plugins.engine import UadEngine
    from uad_plugins.engine.checkpoint import load_checkpoint
    from uad_plugins.export.bundle import export_bundle
    from uad_plugins.export.graph import input_size_of
    from uad_plugins.export.samples import describe_signal_preparation, take_samples
    from uad_plugins.factory import get_spec
    from uad_plugins.protocols import modality_of
    from uad_plugins.provenance import component_record

    check_export_options(parity_samples=parity_samples, calibration_samples=calibration_samples,
                         max_metric_drop=max_metric_drop, int8_strategy=int8_strategy)
    if layout not in ("bundle", "ovms"):
        raise ConfigError(f"unknown layout {layout!r}.", hint="Choose bundle or ovms.")
    expected = None
    if expected_model:
        from uad_plugins.registry import get_registry

        expected_model = get_registry().expand("model", expected_model)  # Padim: anomalib's class path
        spec = get_spec("model", expected_model, flag="--model")
        expected = spec.class_path if spec is not None else expected_model
    # the model class, data and validation synthesizer the checkpoint names are checked before anything is built
    model, record = load_checkpoint(ckpt_path, expected_class_path=expected)
    if datamodule is None and not record.data:
        raise ConfigError(f"checkpoint {ckpt_path} does not record its data, which export needs for the "
                          "parity gate and calibration.", hint="Export a checkpoint written by 'uad fit'.")
    output = Path(output) if output is not None else default_bundle_path(ckpt_path, precision)
    if layout == "ovms":  # checked before the long part: a taken version is refused, never overwritten
        ovms_repo = Path(ovms_repo) if ovms_repo is not None else output.parent / "ovms"
        ovms_name = ovms_name or output.resolve().name
        check_ovms_target(ovms_repo, ovms_name)
    size = input_size_of(model)
    signal = modality_of(model) == "signal"
    # $TMPDIR/uad_export_*, marked with our PID; the stale ones of killed exports are removed first
    with owned_tempdir("uad_export_") as work:
        if datamodule is None:
            datamodule = record.build_datamodule()
            # no recorded synthesizer: the engine takes the datamodule's default (perlin for images,
            # ecg_anomaly for signals), as the fit did
            engine = UadEngine(default_root_dir=work, seed=seed if seed is not None else int(record.seed or 0),
                               heatmaps=False, image_check=image_check,
                               validation_synthesizer=record.validation_synthesizer,
                               validation_ratio=record.validation_ratio)
            engine.open_run(model, datamodule, run_dir=work)
            engine.prepare_data(datamodule, "fit")
        elif getattr(datamodule, "val_data", None) is None:
            raise DataError(f"the datamodule given to export {ckpt_path} has no validation set.",
                            hint="Set it up with the run's honest validation first, or leave it out to rebuild "
                                 "the checkpoint's recorded data.")
        validation = take_samples(datamodule.val_data, size, None, source="validation")
        calibration = take_samples(datamodule.train_data, size, calibration_samples, source="train",
                                   normal_only=True) if precision == "int8" else None
        manifest_provenance = {"component": component_record(model, "model", record.model),
                               "plugins": list(record.plugins), "checkpoint": str(Path(ckpt_path).resolve()),
                               **({"data": record.data} if signal and record.data else {}),
                               **dict(provenance or {})}
        manifest = export_bundle(model, output, precision=precision, validation=validation,
                                 calibration=calibration, parity_samples=parity_samples,
                                 max_metric_drop=max_metric_drop, overwrite=overwrite,
                                 provenance=manifest_provenance, threshold=(record.threshold, record.false_alarm_rate),
                                 input_preparation=describe_signal_preparation(datamodule) if signal else None,
                                 int8_strategy=int8_strategy, progress=progress)
    ovms = None
    if layout == "ovms":  # from the written bundle: only a model that passed the parity gate reaches OVMS
        ovms = write_ovms_layout(output, ovms_repo, name=ovms_name)
        progress(f"OVMS model repository: {ovms.path}")
    return ExportedBundle(path=output, manifest=manifest, ovms=ovms)

