"""Threshold rules (issue 12): F1-adaptive on synthetic anomalies, or a quantile of the validation normals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from uad_plugins.engine.thresholds import NormalQuantileThreshold, apply_threshold_rule, check_threshold_rule
from uad_plugins.errors import ConfigError

torch.set_num_threads(2)


def test_normal_quantile_keeps_the_false_alarm_rate_of_the_normals() -> None:
    normal = torch.arange(1, 201, dtype=torch.float32)  # 200 normal scores 1..200
    anomalous = torch.tensor([0.5, 150.0, 1000.0])  # anomalies never move the threshold
    metric = NormalQuantileThreshold(false_alarm_rate=0.05, fields=["pred_score", "gt_label"])
    metric.update(SimpleNamespace(pred_score=torch.cat([normal[:120], anomalous]),
                                  gt_label=torch.tensor([0] * 120 + [1] * 3)))
    metric.update(SimpleNamespace(pred_score=normal[120:], gt_label=torch.zeros(80, dtype=torch.long)))
    threshold = float(metric.compute())
    assert threshold == 190.0  # 10 of 200 normals (5 %) lie above it
    assert int((normal > threshold).sum()) == 10


def test_pixel_quantile_reads_only_normal_pixels_and_stays_bounded() -> None:
    maps = torch.rand(3, 1, 300, 300, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(3, 1, 300, 300, dtype=torch.bool)
    masks[0, 0, :100] = True
    maps[masks] = 5.0  # anomalous pixels, far above: ignored
    metric = NormalQuantileThreshold(false_alarm_rate=0.01, fields=["anomaly_map", "gt_mask"])
    metric.update(SimpleNamespace(anomaly_map=maps, gt_mask=masks))
    assert abs(float(metric.compute()) - 0.99) < 0.01
    assert sum(v.numel() for v in metric.normal_scores) <= 65536


def test_no_normal_scores_give_nan() -> None:
    metric = NormalQuantileThreshold(false_alarm_rate=0.01, fields=["pred_score", "gt_label"])
    metric.update(SimpleNamespace(pred_score=torch.tensor([1.0]), gt_label=torch.tensor([1])))
    assert torch.isnan(metric.compute())


@pytest.mark.parametrize(("rule", "rate"), [("quantile", 0.01), ("normal_quantile", 0.0), ("normal_quantile", 1.5)])
def test_bad_rules_are_config_errors(rule: str, rate: float) -> None:
    with pytest.raises(ConfigError):
        check_threshold_rule(rule, rate)


def test_rule_is_applied_to_an_anomalib_post_processor_and_fits_on_validation() -> None:
    from anomalib.metrics import F1AdaptiveThreshold
    from anomalib.post_processing import PostProcessor

    post = PostProcessor()
    model = SimpleNamespace(post_processor=post)
    assert apply_threshold_rule(model, "normal_quantile", 0.1)
    batch = SimpleNamespace(pred_score=torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 5.0]),
                            gt_label=torch.tensor([0] * 10 + [1]), anomaly_map=None, gt_mask=None)
    post.on_validation_batch_end(None, None, batch)
    post.on_validation_epoch_end(None, None)
    assert float(post.image_threshold) == pytest.approx(0.9)  # one normal of ten above it
    assert not apply_threshold_rule(model, "f1_adaptive")
    assert isinstance(post._image_threshold_metric, F1AdaptiveThreshold)
