"""Registers the signal metrics: ``signal_auroc``, ``signal_ap`` (sample level), ``signal_point_auroc`` and
``ecg_point_auroc`` (point level; the latter smoothed as ECGAD, for 360 Hz records)."""

from uad_plugins import MetricSpec, hookimpl

_MODULE = "uad_plugins.plugins.signal_metrics.metrics"


@hookimpl
def uad_register_metrics():
    yield MetricSpec(
        name="signal_auroc",
        target=f"{_MODULE}:SignalAUROC",
        summary="Signal sample-level AUROC (exact ranks, ties averaged); logged as sample_AUROC.",
        config={"fields": ["pred_score", "gt_label"], "prefix": "sample_", "strict": True},
        tags=("signal",),
        license="Apache-2.0 (our implementation)",
    )
    yield MetricSpec(
        name="signal_ap",
        target=f"{_MODULE}:SignalAP",
        summary="Signal sample-level average precision; logged as sample_AP.",
        config={"fields": ["pred_score", "gt_label"], "prefix": "sample_", "strict": True},
        tags=("signal",),
        license="Apache-2.0 (our implementation)",
    )
    yield MetricSpec(
        name="signal_point_auroc",
        target=f"{_MODULE}:SignalPointAUROC",
        summary="Signal point-level AUROC over points x leads x windows, optional Gaussian smoothing along time "
                "(ECGAD: sigma 15); logged as point_AUROC.",
        config="uad_plugins.plugins.signal_metrics:config.yaml",
        tags=("signal",),
        paper="ECGAD point-level localisation protocol (Jiang et al., MICCAI 2023, github.com/MediaBrain-SJTU/ECGAD)",
        license="Apache-2.0 (our implementation)",
    )
    yield MetricSpec(
        name="ecg_point_auroc",
        target=f"{_MODULE}:SignalPointAUROC",
        summary="Point-level AUROC after ECGAD's smoothing: Gaussian of 30 ms along time per lead (sigma 11 samples, "
                "for 360 Hz MIT-BIH windows; ECGAD: 15 samples at 500 Hz); logged as point_AUROC.",
        config={"fields": ["anomaly_map", "gt_mask"], "prefix": "point_", "strict": False, "sigma": 11.0,
                "crop": None},
        tags=("signal",),
        paper="ECGAD point-level localisation protocol (Jiang et al., MICCAI 2023, github.com/MediaBrain-SJTU/ECGAD)",
        license="Apache-2.0 (our implementation)",
    )
