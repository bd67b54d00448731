"""Every registered component honours its contract (new plugins are covered automatically)."""

from __future__ import annotations

import pytest
import torch

from uad_plugins import list_components
from uad_plugins.testing import run_metric_contract, run_model_contract, run_synthesizer_contract

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
    """Perfect predictions score 1.0, reversed ones less, and reset() starts afresh."""
    run_metric_contract(reference)
