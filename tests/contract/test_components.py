"""Every registered component honours its contract (new plugins are covered automatically)."""

from __future__ import annotations

import pytest
import torch

from uad_plugins import list_components
from uad_plugins.testing import run_model_contract, run_synthesizer_contract

torch.set_num_threads(2)

MODELS = [s.reference for s in list_components("model") if "image" in s.tags]
SYNTHESIZERS = [s.reference for s in list_components("synthesizer")]
#: image metrics (metrics tagged for another modality have their own contract file)
METRICS = [s.reference for s in list_components("metric") if not {"signal", "pointcloud"} & set(s.tags)]


@pytest.mark.slow
@pytest.mark.parametrize("reference", MODELS)
def test_model_contract(reference: str, tmp_path) -> None:
    report = run_model_contract(reference, tmp_path)
    assert report.steps >= 1
    assert set(report.metrics) >= {"image_AUROC", "pixel_AUROC"}


@pytest.mark.parametrize("reference", SYNTHESIZERS)
def test_synthesizer_contract(reference: str) -> None:
    run_synthesizer_contract(reference)


@pytest.mark.parametrize("reference", METRICS)
def test_metric_contract(reference: str) -> None:
    """Perfect predictions score 1.0."""
    from anomalib.data import ImageBatch

    from uad_plugins import create_metric

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 0, 1], dtype=torch.bool)
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    masks[labels, 8:20, 8:20] = True
    noise = torch.rand(6, 1, 32, 32, generator=g) * 0.1
    perfect = ImageBatch(image=torch.rand(6, 3, 32, 32, generator=g), gt_label=labels, gt_mask=masks,
                         pred_score=labels.float() * 0.8 + 0.1, anomaly_map=masks[:, None].float() * 0.8 + noise)
    metric = create_metric(reference)
    metric.update(perfect)
    value = float(metric.compute())
    assert value == pytest.approx(1.0, abs=1e-4), f"{reference} gives {value} for perfect predictions"
