"""Registers anomalib's image/pixel AUROC, AUPRO, F1-max and AP, and precision, recall and F1 at the chosen
threshold, as metric plugins.

Nothing is re-implemented: each spec points at the anomalib class (precision and recall: torchmetrics' classes as
anomalib metrics, ``metrics.py``) and sets which batch fields it reads.
"""

from uad_plugins import MetricSpec, hookimpl

_IMAGE = ["pred_score", "gt_label"]
_PIXEL = ["anomaly_map", "gt_mask"]
_LABELS = ["pred_label", "gt_label"]
_OURS = "uad_plugins.plugins.standard_metrics.metrics"

#: name -> (anomalib class, fields, summary, extra init args)
_METRICS = {
    "image_auroc": ("AUROC", _IMAGE, "Image-level area under the ROC curve.", {}),
    "pixel_auroc": ("AUROC", _PIXEL, "Pixel-level area under the ROC curve.", {}),
    "image_f1max": ("F1Max", _IMAGE, "Image-level F1 at the best threshold.", {}),
    "pixel_f1max": ("F1Max", _PIXEL, "Pixel-level F1 at the best threshold.", {}),
    "pixel_aupro": ("AUPRO", _PIXEL, "Area under the per-region-overlap curve up to FPR 0.3 (normalised).",
                    {"fpr_limit": 0.3}),
    "image_ap": ("AUPR", _IMAGE, "Image-level average precision (area under the PR curve).", {}),
    "pixel_ap": ("AUPR", _PIXEL, "Pixel-level average precision (area under the PR curve).", {}),
    "image_precision": (f"{_OURS}:Precision", _LABELS, "Image-level precision at the chosen threshold.", {}),
    "image_recall": (f"{_OURS}:Recall", _LABELS, "Image-level recall at the chosen threshold.", {}),
    "image_f1": ("F1Score", _LABELS, "Image-level F1 at the chosen threshold (F1-max is the best one).", {}),
}

@hookimpl
def uad_register_metrics():
    for name, (cls, fields, summary, extra) in _METRICS.items():
        level = name.split("_", 1)[0]
        yield MetricSpec(
            name=name,
            target=cls if ":" in cls else f"anomalib.metrics:{cls}",
            summary=summary,
            # pixel metrics are not strict: a dataset without masks simply skips them
            config={"fields": list(fields), "prefix": f"{level}_", "strict": level == "image", **extra},
            tags=("image",),
            license="Apache-2.0 (anomalib)" if ":" not in cls else "Apache-2.0",
        )
