"""Threshold-free test metrics see raw scores, not the post-processor's clamped ones (issue 12, item 1).

A model whose validation window (min/max/threshold) is narrow: anomalib's post-processor maps every test score
outside it to exactly 0 or 1 before the evaluator runs. The engine's reported AUROC must equal the AUROC of the
raw scores (a rank formula), while anomalib's own evaluator order gives another, lower value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from anomalib import LearningType
from anomalib.data import ImageBatch
from anomalib.models.components import AnomalibModule
from torch.utils.data import DataLoader

torch.set_num_threads(2)


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


class MeanScore(AnomalibModule):
    """Score = mean pixel value, map = per-pixel mean over channels; statistics fixed to a narrow window."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(pre_processor=False, visualizer=False)
        self.scale = scale
        post = self.post_processor
        post._image_threshold.fill_(0.5 * scale)
        post.image_min.fill_(0.48 * scale)
        post.image_max.fill_(0.52 * scale)
        post._pixel_threshold.fill_(0.5 * scale)
        post.pixel_min.fill_(0.48 * scale)
        post.pixel_max.fill_(0.52 * scale)

    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def validation_step(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        return self.test_step(batch)

    def test_step(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        return batch.update(pred_score=self.scale * batch.image.mean(dim=(1, 2, 3)),
                            anomaly_map=self.scale * batch.image.mean(dim=1))

    def configure_optimizers(self) -> None:
        return None

    @property
    def learning_type(self) -> LearningType:
        return LearningType.ONE_CLASS

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        return {}


def _batches(seed: int = 0) -> tuple[list[ImageBatch], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    batches, scores, labels = [], [], []
    for _ in range(6):
        level = rng.uniform(0.0, 1.0, size=8).astype(np.float32)
        label = (level + rng.normal(0, 0.25, size=8) > 0.5).astype(np.int64)
        image = torch.from_numpy(level)[:, None, None, None].expand(8, 3, 16, 16).clone()
        image += torch.from_numpy(rng.normal(0, 1e-3, size=(8, 3, 16, 16)).astype(np.float32))
        mask = torch.zeros(8, 16, 16, dtype=torch.bool)
        mask[torch.from_numpy(label).bool(), 4:12, 4:12] = True
        batches.append(ImageBatch(image=image, gt_label=torch.from_numpy(label).bool(), gt_mask=mask))
        scores.append(image.mean(dim=(1, 2, 3)).numpy())
        labels.append(label)
    return batches, np.concatenate(scores), np.concatenate(labels)


def _loader(batches: list[ImageBatch]) -> DataLoader:
    return DataLoader(batches, batch_size=None, collate_fn=lambda b: b)


@pytest.mark.parametrize("scale", [1.0, 300.0, -40.0])  # raw scores in [0, 1]; in the hundreds (Padim); negative
def test_reported_auroc_is_the_raw_score_auroc(tmp_path: Path, scale: float) -> None:
    from uad_plugins.engine import UadEngine

    batches, raw, labels = _batches()
    normalised = np.clip((raw - 0.5) / 0.04 + 0.5, 0, 1)
    assert (normalised == 0).sum() + (normalised == 1).sum() > len(raw) // 2  # most scores saturate
    raw_auroc, clamped_auroc = _auroc(raw, labels), _auroc(normalised, labels)
    assert raw_auroc - clamped_auroc > 0.02  # the bias is real on this data

    engine = UadEngine(default_root_dir=tmp_path, heatmaps=False, metrics=["plugin:image_auroc", "plugin:pixel_auroc"],
                       enable_progress_bar=False, enable_model_summary=False, logger=False)
    results = engine.test(model=MeanScore(scale), dataloaders=_loader(batches), verbose=False)[0]
    want = raw_auroc if scale > 0 else 1.0 - raw_auroc  # a negative scale reverses the ranking
    assert results["image_AUROC"] == pytest.approx(want, abs=1e-6)
    pixel_raw = np.concatenate([b.image.mean(dim=1).numpy().ravel() for b in batches])
    pixel_labels = np.concatenate([b.gt_mask.numpy().ravel() for b in batches]).astype(np.int64)
    pixel_want = _auroc(scale * pixel_raw, pixel_labels)
    assert results["pixel_AUROC"] == pytest.approx(pixel_want, abs=1e-4)


def test_torchmetrics_would_sigmoid_raw_scores_outside_the_unit_interval() -> None:
    """Why raw outputs are scaled before they reach anomalib's metrics: fed as they are, scores in the hundreds go
    through a sigmoid, all become 1.0 and the AUROC is 0.5 (what Padim and UniAD rows reported before)."""
    from anomalib.metrics import AUROC

    from uad_plugins.engine.metrics import RawMetricFeed

    _, raw, labels = _batches()
    batch = ImageBatch(image=torch.zeros(len(raw), 3, 4, 4), pred_score=torch.from_numpy(300 * raw + 100),
                       gt_label=torch.from_numpy(labels).bool())
    plain = AUROC(fields=["pred_score", "gt_label"])
    plain.update(batch)
    assert float(plain.compute()) == pytest.approx(0.5)
    fed = AUROC(fields=["pred_score", "gt_label"])
    feed = RawMetricFeed()
    feed.add(batch, [fed])
    feed.feed([fed])
    assert float(fed.compute()) == pytest.approx(_auroc(raw, labels), abs=1e-6)


def test_anomalib_evaluator_order_reports_the_clamped_auroc(tmp_path: Path) -> None:
    """What the engine did before: anomalib's evaluator after the post-processor, on clamped scores."""
    from anomalib.engine import Engine
    from anomalib.metrics import AUROC, Evaluator

    batches, raw, labels = _batches()
    normalised = np.clip((raw - 0.5) / 0.04 + 0.5, 0, 1)
    model = MeanScore()
    model.evaluator = Evaluator(test_metrics=[AUROC(fields=["pred_score", "gt_label"], prefix="image_")])
    engine = Engine(default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, logger=False)
    results = engine.test(model=model, dataloaders=_loader(batches), verbose=False)[0]
    assert results["image_AUROC"] == pytest.approx(_auroc(normalised, labels), abs=1e-6)
    assert results["image_AUROC"] < _auroc(raw, labels) - 0.02


def test_thresholded_metrics_still_see_labels(tmp_path: Path) -> None:
    """A metric that reads pred_label gets the post-processed batch (labels exist only after thresholding)."""
    from uad_plugins.engine.metrics import metric_input, reads_thresholded

    class LabelMetric:
        fields = ["pred_label", "gt_label"]

    class ScoreMetric:
        fields = ["pred_score", "gt_label"]

    batch = ImageBatch(image=torch.zeros(2, 3, 4, 4), pred_score=torch.tensor([0.0, 1.0]),
                       pred_label=torch.tensor([False, True]), gt_label=torch.tensor([False, True]))
    batch._uad_raw_outputs = {"pred_score": torch.tensor([3.0, 7.0])}
    assert reads_thresholded(LabelMetric()) and not reads_thresholded(ScoreMetric())
    assert metric_input(batch, LabelMetric()) is batch
    view = metric_input(batch, ScoreMetric())
    assert view.pred_score.tolist() == [3.0, 7.0] and view.gt_label.tolist() == [False, True]
