"""Registers point-level AUROC and AUPRO for point clouds (they read a ``PointCloudBatch``)."""

from uad_plugins import MetricSpec, hookimpl

_FIELDS = ["anomaly_map", "gt_mask"]


@hookimpl
def uad_register_metrics():
    # not strict, like anomalib's pixel metrics: clouds without per-point ground truth simply skip them
    yield MetricSpec(
        name="point_auroc",
        target="uad_plugins.plugins.pointcloud_metrics.metrics:PointAUROC",
        summary="Point-level area under the ROC curve over the valid points of every cloud.",
        config={"fields": list(_FIELDS), "prefix": "point_", "strict": False},
        tags=("pointcloud",),
        license="Apache-2.0",
    )
    yield MetricSpec(
        name="point_aupro",
        target="uad_plugins.plugins.pointcloud_metrics.metrics:PointAUPRO",
        summary="Point-level area under the per-region-overlap curve up to FPR 0.3 (organised clouds, normalised).",
        config={"fields": list(_FIELDS), "prefix": "point_", "strict": False, "fpr_limit": 0.3},
        tags=("pointcloud",),
        paper="Bergmann et al., The MVTec 3D-AD Dataset, VISAPP 2022 (AUPRO up to FPR 0.3)",
        license="Apache-2.0",
    )
