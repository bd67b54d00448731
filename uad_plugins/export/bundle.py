"""``export_bundle``: model -> OpenVINO bundle (IR + manifest.json + parity.json), written whole or not at all."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from uad_edge.manifest import (
    BUNDLE_FILES,
    FORMAT,
    FORMAT_VERSION,
    INFERENCE_PRECISION,
    LISTED_FILES,
    MANIFEST_FILE,
    MODEL_XML,
    PARITY_FILE,
    PRECISIONS,
    seal_manifest,
    sha256_file,
)
from uad_edge.tempdirs import OWNER_MARKER, make_owned_tempdir, owned_tempdir
from uad_plugins.export.graph import (
    ExportError,
    PostStats,
    append_postprocessing,
    convert_raw,
    input_size_of,
)
from uad_plugins.export.parity import (
    BUDGET_METRICS,
    ParityReport,
    compare_outputs,
    raw_outputs,
    run_compiled,
    run_eager,
)
from uad_plugins.export.quantize import budget_aurocs, quantize_int8
from uad_plugins.export.samples import Samples
from uad_plugins.protocols import modality_of

__all__ = ["BUNDLE_FORMAT_VERSION", "PRECISIONS", "export_bundle"]

#: the edge runtime's current format (2: the manifest carries manifest_sha256; see uad_edge.manifest, which
#: owns the bundle format: file names, precisions, versions)
BUNDLE_FORMAT_VERSION = FORMAT_VERSION


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("uad_plugins", "openvino", "torch", "anomalib", "nncf"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def _compile(model_or_path: Any, precision: str) -> Any:
    import openvino as ov

    return ov.Core().compile_model(model_or_path, "CPU", {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision]})


def refit_post_stats(raw_scores: np.ndarray, raw_maps: np.ndarray, samples: Samples,
                     threshold: tuple[str, float] = ("f1_adaptive", 0.01)) -> PostStats:
    """Thresholds (with the run's rule: ``(rule, false_alarm_rate)``, see :mod:`uad_plugins.engine.thresholds`)
    and min-max statistics fitted on raw outputs, as anomalib's PostProcessor does."""
    from anomalib.metrics import F1AdaptiveThreshold, MinMax

    from uad_plugins.engine.thresholds import NormalQuantileThreshold, check_threshold_rule

    if samples.labels is None or int(samples.labels.sum()) == 0 or int((samples.labels == 0).sum()) == 0:
        raise ExportError("INT8 needs validation samples with both normal and anomalous inputs to re-fit "
                          "thresholds after quantization.",
                          hint="Use the default honest validation (synthetic anomalies) or a validation folder.")
    scores = torch.from_numpy(np.asarray(raw_scores, dtype=np.float32))
    maps = torch.from_numpy(np.asarray(raw_maps, dtype=np.float32)).reshape(len(scores), *raw_maps.shape[-2:])
    batch = SimpleNamespace(pred_score=scores, gt_label=samples.labels.bool(), anomaly_map=maps,
                            gt_mask=samples.masks.bool())
    rule, rate = threshold
    check_threshold_rule(rule, rate)
    if rule == "normal_quantile":
        image_thr = NormalQuantileThreshold(false_alarm_rate=rate, fields=["pred_score", "gt_label"])
        pixel_thr = NormalQuantileThreshold(false_alarm_rate=rate, fields=["anomaly_map", "gt_mask"])
    else:
        image_thr = F1AdaptiveThreshold(fields=["pred_score", "gt_label"])
        pixel_thr = F1AdaptiveThreshold(fields=["anomaly_map", "gt_mask"])
    image_thr.update(batch)
    pixel_thr.update(batch)
    image_mm, pixel_mm = MinMax(fields=["pred_score"]), MinMax(fields=["anomaly_map"])
    image_mm.update(batch)
    pixel_mm.update(batch)
    image_min, image_max = (float(v) for v in image_mm.compute())
    pixel_min, pixel_max = (float(v) for v in pixel_mm.compute())
    pixel_threshold = float(pixel_thr.compute()) if bool(samples.masks.any()) else (pixel_min + pixel_max) / 2
    return PostStats(image_threshold=float(image_thr.compute()), pixel_threshold=pixel_threshold,
                     image_min=image_min, image_max=image_max, pixel_min=pixel_min, pixel_max=pixel_max)


def _check_compiles_in_a_child(ov_model: Any, precision: str) -> None:
    """Compile the model in a separate process first: OpenVINO's CPU plugin can crash (SIGSEGV) on some
    quantized graphs, and a crash must become an error, not the end of the export process."""
    import openvino as ov

    with owned_tempdir("uad_int8_check_") as work:
        path = work / MODEL_XML
        ov.save_model(ov_model, path, compress_to_fp16=False)
        code = ("import sys, openvino as ov; ov.Core().compile_model(sys.argv[1], 'CPU', "
                f"{{'INFERENCE_PRECISION_HINT': '{INFERENCE_PRECISION[precision]}'}})")
        result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                                timeout=600)
    if result.returncode != 0:
        why = f"signal {-result.returncode}" if result.returncode < 0 else result.stderr.strip()[-300:]
        raise ExportError(f"OpenVINO cannot compile the quantized {precision.upper()} model on this CPU ({why}).",
                          hint="Export FP32 or FP16 instead; nothing was written.")


def _metric_budget(eager_raw: tuple[np.ndarray, np.ndarray], int8_raw: tuple[np.ndarray, np.ndarray],
                   samples: Samples, max_drop: float) -> tuple[dict[str, dict[str, float]], list[str]]:
    names = dict(zip(("sample", "map"), BUDGET_METRICS[samples.modality], strict=True))
    eager, int8 = budget_aurocs(*eager_raw, samples), budget_aurocs(*int8_raw, samples)
    metrics = {names[key]: {"eager": eager[key], "int8": int8[key]} for key in eager}
    failures = []
    for name, values in metrics.items():
        values["drop"] = values["eager"] - values["int8"]
        if values["drop"] > max_drop:
            failures.append(f"{name} drops by {values['drop'] * 100:.2f} points ({values['eager']:.4f} -> "
                            f"{values['int8']:.4f}), more than the allowed {max_drop * 100:.2f}")
    return metrics, failures


def export_bundle(model: Any, output: str | Path, *, precision: str = "fp32", validation: Samples,
                  calibration: Samples | None = None, parity_samples: int = 16, max_metric_drop: float = 0.01,
                  overwrite: bool = False, provenance: dict[str, Any] | None = None,
                  input_preparation: dict[str, Any] | None = None,
                  threshold: tuple[str, float] = ("f1_adaptive", 0.01), int8_strategy: str = "accuracy_control",
                  progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Export ``model`` to an OpenVINO bundle at ``output``; returns the manifest.

    Image models take ``[N, 3, H, W]``; signal models (``model.modality == "signal"``) take windows ``[N, K, Q]``
    and their bundles also return the raw score and map. ``validation`` and ``calibration`` come from
    :func:`~uad_plugins.export.samples.take_samples`; ``input_preparation`` (signals) says how the datamodule
    prepared the windows (recorded in the manifest: a bundle takes windows prepared that way). ``threshold`` is the
    run's threshold rule, used where INT8 re-fits the thresholds after quantization; ``int8_strategy`` is one of
    :data:`~uad_plugins.export.quantize.INT8_STRATEGIES` (how much of the graph is quantized, see that module).
    Raises :class:`ExportError` (nothing written) when conversion fails or the parity gate does not pass.
    """
    import openvino as ov

    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision '{precision}'.", hint=f"Choose one of: {', '.join(PRECISIONS)}.")
    out = Path(output)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise ExportError(f"{out} already exists.", hint="Choose another --output, or pass --overwrite.")
    if out.exists() or out.is_symlink():
        _check_replaceable(out)
    model = model.eval()
    started = time.perf_counter()
    modality = modality_of(model)
    size = input_size_of(model)
    if validation.modality != modality:
        raise ExportError(f"the validation samples are {validation.modality} data, but {type(model).__name__} is a "
                          f"{modality} model.", hint="Export with the data the model was trained on.")
    stats = PostStats.from_post_processor(model.post_processor)
    shape = f"[N, {size[0]}, {size[1]}] (batch, leads, time)" if modality == "signal" else \
        f"[N, 3, {size[0]}, {size[1]}]"
    progress(f"converting {type(model).__name__} to OpenVINO (input {shape})")
    raw, dynamic_batch = convert_raw(model, size)
    batch_size = 8 if dynamic_batch else 1
    refitted = False
    report: ParityReport
    check = validation.subset(parity_samples)
    if precision == "int8":
        if calibration is None:
            raise ExportError("INT8 export needs calibration inputs (normal training images or windows).")
        eager_raw = raw_outputs(_compile(raw, "fp32"), validation, batch_size)
        quantized = quantize_int8(raw, calibration, validation, strategy=int8_strategy, max_drop=max_metric_drop,
                                  batch_size=batch_size, fp32_outputs=eager_raw, progress=progress)
        raw_q = quantized.model
        _check_compiles_in_a_child(raw_q, precision)
        progress(f"re-fitting thresholds and normalisation on the INT8 model's outputs ({len(validation)} "
                 f"validation {'windows' if modality == 'signal' else 'images'})")
        int8_raw = raw_outputs(_compile(raw_q, precision), validation, batch_size)
        stats = refit_post_stats(*int8_raw, validation, threshold)
        refitted = True
        metrics, failures = _metric_budget(eager_raw, int8_raw, validation, max_metric_drop)
        report = ParityReport(precision=precision, samples=len(validation), passed=not failures, mode="metrics",
                              tolerances={"max_metric_drop": max_metric_drop}, metrics=metrics, failures=failures,
                              quantization=quantized.describe())
        raw = raw_q
    # raw outputs too: the normalised score is clipped to [0, 1], so only raw scores rank every input (metrics)
    full = append_postprocessing(raw, stats, keep_raw=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_owned_tempdir(f".{out.name}.", out.parent)  # and removes those of killed exports
    try:
        ov.save_model(full, tmp / MODEL_XML, compress_to_fp16=(precision == "fp16"))
        compiled = _compile(tmp / MODEL_XML, precision)
        names = [f"{check.source}[{i}]" for i in range(len(check))]
        exported = run_compiled(compiled, check.images, batch_size)
        if precision != "int8":
            progress(f"parity gate: eager vs OpenVINO {precision.upper()} on {len(check)} {check.source} samples")
            report = compare_outputs(precision, run_eager(model, check.images), exported, names,
                                     threshold=stats.normalized_image_threshold)
        else:
            eager = run_eager(model, check.images)
            report.label_agreement = float((eager["pred_label"].astype(bool)
                                            == exported["pred_label"].astype(bool)).mean())
        if not report.passed:
            raise ExportError(report.explain(), hint="Nothing was written. See docs/deploy.md for the tolerances; "
                              "for INT8, --max_metric_drop sets the allowed quality loss.")
        (tmp / PARITY_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        manifest = {
            "format": FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "modality": modality, "precision": precision,
            "inference_precision_hint": INFERENCE_PRECISION[precision],
            **(provenance or {}),
            "versions": _versions(),
            **_io_spec(model, modality, size, dynamic_batch, input_preparation),
            "postprocessing": {"in_graph": True, **stats.to_dict(), "refitted_after_quantization": refitted,
                               "fitted_on": _fitted_on(validation),
                               **({"levels": {"image_*": "sample", "pixel_*": "point (lead x time)"}}
                                  if modality == "signal" else {})},
            "parity": report.summary(),
            "export_seconds": round(time.perf_counter() - started, 2),
        }
        manifest["files"] = {name: sha256_file(tmp / name) for name in LISTED_FILES}
        manifest = seal_manifest(manifest)  # adds manifest_sha256 (the edge runtime refuses an edited manifest)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (tmp / OWNER_MARKER).unlink()
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"bundle written to {out} ({manifest['export_seconds']} s)")
    return manifest


def _check_replaceable(out: Path) -> None:
    """``--overwrite`` replaces a bundle, never anything else: the folder must hold only bundle files and a
    manifest.json of a uad bundle."""
    hint = "--overwrite only replaces a bundle written by 'uad export'; choose another --output. Nothing was written."
    if out.is_symlink() or not out.is_dir():
        raise ExportError(f"{out} exists and is not a bundle folder.", hint=hint)
    others = sorted(p.name for p in out.iterdir() if p.name not in BUNDLE_FILES)
    if others:
        raise ExportError(f"{out} is not a bundle: it holds {', '.join(others[:5])}"
                          f"{' ...' if len(others) > 5 else ''}.", hint=hint)
    try:
        manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{out} is not a bundle (manifest.json: {type(exc).__name__}).", hint=hint) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{out} is not a bundle (its manifest.json is not a {FORMAT} manifest).", hint=hint)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing bundle at ``out`` (checked by :func:`_check_replaceable`) is moved
    aside into an owned temporary first and removed only once the new one is in place."""
    if not (out.exists() or out.is_symlink()):
        tmp.rename(out)
        return
    _check_replaceable(out)  # again: it may have changed during the export
    aside = make_owned_tempdir(f".{out.name}.", out.parent)
    try:
        out.rename(aside / "previous")
        try:
            tmp.rename(out)
        except BaseException:
            (aside / "previous").rename(out)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _fitted_on(samples: Samples) -> str:
    """Where the post-processing statistics come from, e.g. ``validation: 42 windows (21 anomalous)``."""
    unit = "windows" if samples.modality == "signal" else "images"
    if samples.labels is None:
        return f"{samples.source}: {len(samples)} {unit}"
    return f"{samples.source}: {len(samples)} {unit} ({int(samples.labels.sum())} anomalous)"


def _io_spec(model: Any, modality: str, size: tuple[int, int], dynamic_batch: bool,
             preparation: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``input``, ``preprocessing`` and ``outputs`` blocks."""
    if modality == "signal":
        from torch import nn

        leads, length = size
        pre = getattr(model, "pre_processor", None)
        pre = pre if isinstance(pre, nn.Module) else None
        return {
            "input": {"name": "input", "layout": "BKQ", "dims": ["batch", "leads", "time"], "dtype": "float32",
                      "leads": leads, "length": length, "shape": [-1 if dynamic_batch else 1, leads, length],
                      "dynamic_batch": dynamic_batch},
            # the model's own pre-processor (if any) is in the graph; windowing, filtering and normalisation are
            # the datamodule's, done by the caller ('data' says how)
            "preprocessing": {"in_graph": pre is not None, "model": None if pre is None else type(pre).__name__,
                              "windows": "caller: windows prepared like the training windows (see 'data')",
                              "data": dict(preparation or {})},
            "outputs": {"pred_score": ["N"], "pred_label": ["N"], "anomaly_map": ["N", leads, length],
                        "pred_mask": ["N", leads, length], "raw_score": ["N"], "raw_map": ["N", leads, length]},
        }
    return {
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32", "range": [0, 1], "color": "RGB",
                  "channels": 3, "height": size[0], "width": size[1], "dynamic_batch": dynamic_batch},
        "preprocessing": {"in_graph": True, "resize": "caller (fixed input size)", **_normalisation(model)},
        "outputs": {"pred_score": ["N"], "pred_label": ["N"], "anomaly_map": ["N", 1, size[0], size[1]],
                    "pred_mask": ["N", 1, size[0], size[1]], "raw_score": ["N"],
                    "raw_map": ["N", 1, size[0], size[1]]},
    }


def _normalisation(model: Any) -> dict[str, Any]:
    from torchvision.transforms.v2 import Normalize

    transform = getattr(getattr(model, "pre_processor", None), "transform", None)
    for t in list(getattr(transform, "transforms", [transform])) if transform is not None else []:
        if isinstance(t, Normalize):
            return {"mean": [float(v) for v in t.mean], "std": [float(v) for v in t.std]}
    return {"mean": None, "std": None}
