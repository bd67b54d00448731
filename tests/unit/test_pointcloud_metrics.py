"""Point-level AUROC / AUPRO and the point-cloud batch: exact values, invalid points left out, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uad_plugins import create_metric
from uad_plugins.data.pointcloud.batch import PointCloudBatch, PointCloudItem
from uad_plugins.errors import DataError
from uad_plugins.plugins.pointcloud_metrics.metrics import (
    PointAUPRO,
    PointAUROC,
    aupro_from_regions,
    auroc,
    region_sizes,
)

torch.set_num_threads(2)


def _pairwise_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _sweep_aupro(scores: np.ndarray, gt: np.ndarray, valid: np.ndarray, limit: float) -> float:
    """PRO curve by brute force: every distinct threshold, regions found by flood fill (8-connected)."""
    regions = []
    for b in range(gt.shape[0]):
        seen = np.zeros_like(gt[b])
        for r, c in zip(*np.nonzero(gt[b]), strict=True):
            if seen[r, c]:
                continue
            stack, members = [(r, c)], []
            seen[r, c] = True
            while stack:
                y, x = stack.pop()
                members.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < gt.shape[1] and 0 <= xx < gt.shape[2] and gt[b, yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            stack.append((yy, xx))
            members = [(y, x) for y, x in members if valid[b, y, x]]
            if members:
                regions.append((b, np.array(members)))
    normal = valid & ~gt
    xs, ys = [0.0], [0.0]
    for t in np.sort(np.unique(scores[valid]))[::-1]:
        xs.append(float((scores[normal] >= t).mean()))
        ys.append(float(np.mean([(scores[b][m[:, 0], m[:, 1]] >= t).mean() for b, m in regions])))
    xs, ys = np.array(xs), np.array(ys)
    grid = np.linspace(0, limit, 20001)
    return float(np.trapezoid(np.interp(grid, xs, ys), grid) / limit)


def _organised_batch(seed: int = 0, b: int = 3, h: int = 12, w: int = 10):
    rng = np.random.default_rng(seed)
    gt = np.zeros((b, h, w), dtype=bool)
    gt[0, 2:5, 2:6] = True
    gt[0, 8:10, 7:9] = True
    gt[1, 0:3, 0:2] = True
    gt[1, 5, 5] = gt[1, 6, 6] = True  # diagonal neighbours: one region
    valid = rng.random((b, h, w)) > 0.1
    scores = np.round(rng.random((b, h, w)) + gt * rng.uniform(0, 1.0, (b, h, w)), 1)  # many ties
    return scores, gt, valid


def test_auroc_is_exact_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=400), 1)
    labels = rng.random(400) < 0.3
    scores[labels] += 0.5
    assert auroc(scores, labels) == pytest.approx(_pairwise_auroc(scores, labels), abs=1e-12)
    assert auroc(np.array([1e9, 2e9, 3e9]), np.array([False, True, True])) == 1.0  # no sigmoid saturation
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert np.isnan(auroc(np.ones(3), np.zeros(3, dtype=bool)))


def test_region_sizes_count_valid_points_of_8_connected_regions() -> None:
    gt = np.zeros((5, 5), dtype=bool)
    gt[0, 0] = gt[1, 1] = True  # diagonal: one region
    gt[3:5, 3:5] = True
    valid = np.ones((5, 5), dtype=bool)
    valid[4, 4] = False
    sizes, count = region_sizes(gt, valid)
    assert count == 2 and sizes[0, 0] == sizes[1, 1] == 2 and sizes[3, 3] == 3 and sizes[4, 4] == 0
    assert sizes[~gt].sum() == 0


@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_a_brute_force_threshold_sweep(limit: float) -> None:
    scores, gt, valid = _organised_batch()
    metric = PointAUPRO(fpr_limit=limit)
    metric.update(PointCloudBatch(anomaly_map=scores, gt_mask=gt, valid=valid))
    assert float(metric.compute()) == pytest.approx(_sweep_aupro(scores, gt, valid, limit), abs=1e-4)


def test_aupro_matches_anomalibs_when_every_point_is_valid() -> None:
    from anomalib.metrics.aupro import _AUPRO

    scores, gt, _ = _organised_batch(seed=1)
    ours = PointAUPRO(fpr_limit=0.3)
    ours.update(PointCloudBatch(anomaly_map=scores, gt_mask=gt))
    theirs = _AUPRO(fpr_limit=0.3)
    theirs.update(torch.from_numpy(scores).float(), torch.from_numpy(gt).int())
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), abs=1e-4)


def test_invalid_points_are_left_out() -> None:
    _, gt, valid = _organised_batch()
    perfect = np.where(gt, 1.0, 0.0)
    garbage = np.where(valid, perfect, np.where(gt, 0.0, 5.0))  # invalid points scored the wrong way round
    batch = PointCloudBatch(anomaly_map=garbage, gt_mask=gt, valid=valid)
    for metric in (PointAUROC(), PointAUPRO()):
        metric.update(batch)
        assert float(metric.compute()) == 1.0
    blind = PointAUROC()
    blind.update(PointCloudBatch(anomaly_map=garbage, gt_mask=gt))  # no valid field, no points: all count
    assert float(blind.compute()) < 0.99
    nan_at_invalid = np.where(valid, perfect, np.nan)
    metric = PointAUROC()
    metric.update(PointCloudBatch(anomaly_map=nan_at_invalid, gt_mask=gt, valid=valid))
    assert float(metric.compute()) == 1.0


def test_points_give_the_valid_mask_and_updates_accumulate() -> None:
    scores, gt, valid = _organised_batch()
    points = np.where(valid[..., None], np.random.default_rng(0).random((*gt.shape, 3)) + 0.1, 0.0)
    whole, parts = PointAUROC(), PointAUROC()
    whole.update(PointCloudBatch(points=points, anomaly_map=scores, gt_mask=gt))
    for i in range(3):
        parts.update(PointCloudBatch(points=points[i:i + 1], anomaly_map=scores[i:i + 1], gt_mask=gt[i:i + 1]))
    s, g = scores[valid], gt[valid]
    assert float(whole.compute()) == pytest.approx(_pairwise_auroc(s, g), abs=1e-6)
    assert float(parts.compute()) == pytest.approx(float(whole.compute()), abs=1e-7)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")  # torchmetrics: compute before update
def test_metric_errors_and_strictness() -> None:
    scores, gt, _ = _organised_batch()
    flat = PointCloudBatch(anomaly_map=scores.reshape(3, -1), gt_mask=gt.reshape(3, -1))
    flat.grid_shape = None
    with pytest.raises(DataError, match="organised"):
        PointAUPRO().update(flat)
    with pytest.raises(DataError, match="NaN"):
        PointAUROC().update(PointCloudBatch(anomaly_map=np.full((1, 4), np.nan), gt_mask=np.ones((1, 4), bool)))
    with pytest.raises(DataError, match="gt_mask"):
        PointAUROC().update(PointCloudBatch(anomaly_map=scores))
    lenient = create_metric("plugin:point_auroc")
    lenient.update(PointCloudBatch(anomaly_map=scores))
    assert lenient.compute() is None
    with pytest.raises(DataError, match="fpr_limit"):
        PointAUPRO(fpr_limit=0)
    with pytest.warns(RuntimeWarning, match="undefined"):  # no anomalous region: NaN, not a made-up number
        assert np.isnan(aupro_from_regions(np.arange(5.0), np.zeros(5, dtype=int), 0))


def test_registered_names_and_prefixes() -> None:
    auroc_metric, aupro_metric = create_metric("plugin:point_auroc"), create_metric("plugin:point_aupro")
    assert auroc_metric.name == "point_AUROC" and aupro_metric.name == "point_AUPRO"
    assert aupro_metric.fpr_limit == 0.3 and list(auroc_metric.fields) == ["anomaly_map", "gt_mask"]
    cloud_level = create_metric("plugin:image_auroc")  # cloud-level AUROC: anomalib's metric reads the batch as is
    cloud_level.update(PointCloudBatch(points=torch.rand(4, 10, 3) + 0.1, gt_label=[0, 1, 0, 1],
                                       pred_score=[0.1, 0.9, 0.5, 0.3]))
    assert float(cloud_level.compute()) == pytest.approx(0.75)


# --------------------------------------------------------------------------------------------- batch
def test_batch_flattens_organised_fields_and_derives_valid() -> None:
    points = torch.rand(2, 4, 5, 3) + 0.1
    points[0, 0, 0] = 0
    batch = PointCloudBatch(points=points, gt_mask=np.zeros((2, 4, 5), bool), anomaly_map=torch.rand(2, 1, 4, 5),
                            gt_label=[0, 1], pred_score=np.array([0.2, 0.9]))
    assert batch.points.shape == (2, 20, 3) and batch.grid_shape == (4, 5) and len(batch) == 2
    assert batch.anomaly_map.shape == (2, 20) and batch.gt_mask.dtype == torch.bool
    assert batch.valid.sum() == 39 and not batch.valid[0, 0]
    assert batch.gt_label.dtype == torch.bool and batch.pred_score.dtype == torch.float64
    items = list(batch)
    assert len(items) == 2 and items[1].points.shape == (20, 3) and items[1].grid_shape == (4, 5)
    assert bool(items[1].gt_label) and items[0].valid.sum() == 19
    changed = batch.update(in_place=False, anomaly_map=torch.zeros(2, 20))
    assert float(changed.anomaly_map.sum()) == 0 and float(batch.anomaly_map.sum()) > 0


def test_collate_pads_clouds_of_different_sizes_with_invalid_points() -> None:
    a = PointCloudItem(points=torch.rand(5, 3) + 0.1, gt_mask=torch.ones(5, dtype=torch.bool), gt_label=1,
                       cloud_path="a.ply")
    b = PointCloudItem(points=torch.rand(3, 3) + 0.1, gt_mask=torch.zeros(3, dtype=torch.bool), gt_label=0,
                       cloud_path="b.ply")
    batch = PointCloudBatch.collate([a, b])
    assert batch.points.shape == (2, 5, 3) and batch.valid.tolist()[1] == [True] * 3 + [False] * 2
    assert batch.grid_shape is None and batch.cloud_path == ["a.ply", "b.ply"]
    assert batch.gt_label.tolist() == [True, False]
    same = PointCloudBatch.collate([PointCloudItem(points=torch.rand(2, 3, 3)) for _ in range(2)])
    assert same.grid_shape == (2, 3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"points": torch.rand(2, 5, 2)}, "points has shape"),
    ({"points": torch.rand(2, 5, 3), "anomaly_map": torch.rand(2, 4)}, "4 points per cloud"),
    ({"anomaly_map": torch.rand(2, 6), "grid_shape": (2, 2)}, "grid_shape"),
    ({"anomaly_map": torch.rand(2, 6), "pred_score": torch.rand(3)}, "batch size"),
    ({"anomaly_map": torch.rand(2, 2, 2, 2, 2)}, "anomaly_map has shape"),
])
def test_batch_validation_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        PointCloudBatch(**kwargs)
