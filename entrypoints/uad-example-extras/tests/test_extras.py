"""The example extras check themselves with the uad conformance kit (fixtures from the pytest11 plugin)."""

import pytest
import torch

torch.set_num_threads(2)


def test_registered_from_the_entry_point() -> None:
    import uad_plugins

    for kind, reference in (("synthesizer", "plugin:scratch"), ("metric", "plugin:image_tpr_at_fpr")):
        spec = uad_plugins.get_spec(kind, reference)
        assert spec.distribution == "uad-example-extras" and spec.source == "entrypoint"


def test_scratch_contract(uad_synthesizer_contract) -> None:
    uad_synthesizer_contract("plugin:scratch")


def test_tpr_at_fpr_contract(uad_metric_contract) -> None:
    assert uad_metric_contract("plugin:image_tpr_at_fpr") == 1.0


def test_tpr_at_fpr_counts_what_it_says() -> None:
    """20 normals 0..19 and anomalies 17.5, 18.5, 25: at FPR 0.05 one normal (19) may be flagged."""
    from anomalib.data import ImageBatch

    from uad_plugins import create_metric

    scores = torch.tensor([*range(20), 17.5, 18.5, 25.0])
    labels = torch.tensor([0] * 20 + [1] * 3, dtype=torch.bool)
    batch = ImageBatch(image=torch.zeros(23, 3, 8, 8), gt_label=labels, pred_score=scores)
    metric = create_metric("plugin:image_tpr_at_fpr")
    metric.update(batch)
    assert float(metric.compute()) == pytest.approx(2 / 3)  # 18.5 and 25 lie above the threshold 18
    strict = create_metric("plugin:image_tpr_at_fpr", fpr=0.0)
    strict.update(batch)
    assert float(strict.compute()) == pytest.approx(1 / 3)  # only 25 lies above the largest normal (19)
