"""Every registered point-cloud component honours its contract (new plugins tagged ``pointcloud`` are covered).

Synthesizers: same shape, dtype and order; a binary per-point mask that marks exactly the moved points; invalid
``(0, 0, 0)`` points untouched; reproducible for a seed on a fresh instance; both organised ``[H, W, 3]`` and
unorganised ``[N, 3]`` clouds. Metrics: perfect per-point predictions score 1, with invalid points scored
wrongly (they must be left out).
"""

from __future__ import annotations

import pytest
import torch

from uad_plugins import create_metric, create_synthesizer, get_spec, list_components
from uad_plugins.data.pointcloud.batch import PointCloudBatch

torch.set_num_threads(2)

SYNTHESIZERS = [s.reference for s in list_components("synthesizer") if "pointcloud" in s.tags]
METRICS = [s.reference for s in list_components("metric") if "pointcloud" in s.tags]


def _surface(h: int = 48, w: int = 40) -> torch.Tensor:
    """An organised float32 cloud 1 unit from the origin with a ridge, its first rows invalid."""
    yy, xx = torch.meshgrid(torch.linspace(-0.5, 0.5, h), torch.linspace(-0.5, 0.5, w), indexing="ij")
    z = 1.0 + 0.05 * torch.cos(6 * xx) * torch.exp(-4 * yy**2)
    cloud = torch.stack([0.3 * xx, 0.3 * yy, z], dim=-1).float()
    cloud[:3] = 0.0
    return cloud


def _build(reference: str):
    spec = get_spec("synthesizer", reference)
    return create_synthesizer(reference, **spec.test_init_args())


@pytest.mark.parametrize("reference", SYNTHESIZERS)
@pytest.mark.parametrize("organised", [True, False])
def test_pointcloud_synthesizer_contract(reference: str, organised: bool) -> None:
    cloud = _surface()
    sample = cloud if organised else cloud.reshape(-1, 3)
    synth = _build(reference)
    assert synth.modality == "pointcloud"
    out, mask = synth(sample, seed=1)
    torch.rand(7)  # disturb the global RNG: a fresh instance must still give the same result
    again, mask2 = _build(reference)(sample, seed=1)
    assert out.shape == sample.shape and out.dtype == sample.dtype, f"{reference}: shape/dtype changed"
    assert tuple(mask.shape) == tuple(sample.shape[:-1]), f"{reference}: mask shape {tuple(mask.shape)}"
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}, f"{reference}: mask is not binary"
    assert torch.equal(out, again) and torch.equal(mask, mask2), f"{reference}: not reproducible for a seed"
    flat_in, flat_out, flat_mask = sample.reshape(-1, 3), out.reshape(-1, 3), mask.reshape(-1) > 0
    moved = (flat_out != flat_in).any(dim=1)
    invalid = (flat_in == 0).all(dim=1)
    assert flat_mask.any(), f"{reference}: made no anomaly on a plain surface"
    assert torch.equal(moved, flat_mask), f"{reference}: the mask does not mark exactly the moved points"
    assert torch.equal(flat_out[invalid], flat_in[invalid]) and not flat_mask[invalid].any(), (
        f"{reference}: invalid points were changed or marked")
    other, _ = synth(sample, seed=2)
    assert not torch.equal(other, out), f"{reference}: another seed gave the same result"


@pytest.mark.parametrize("reference", METRICS)
def test_pointcloud_metric_contract(reference: str) -> None:
    """Perfect predictions score 1.0; invalid points (scored the wrong way round) are left out."""
    g = torch.Generator().manual_seed(0)
    points = _surface(16, 16).expand(4, -1, -1, -1).clone()
    valid = (points != 0).any(dim=-1)
    gt = torch.zeros(4, 16, 16, dtype=torch.bool)
    gt[1, 6:10, 6:12] = True
    gt[2, 8:12, 2:5] = True
    gt[3, 3:5, 3:5] = gt[3, 12:15, 10:14] = True
    perfect = gt.float() * 0.8 + torch.rand(4, 16, 16, generator=g) * 0.1
    scores = torch.where(valid, perfect, 1.0 - gt.float())
    batch = PointCloudBatch(points=points, gt_mask=gt, anomaly_map=scores, gt_label=gt.flatten(1).any(1),
                            pred_score=gt.flatten(1).any(1).float())
    metric = create_metric(reference)
    metric.update(batch)
    value = float(metric.compute())
    assert value == pytest.approx(1.0, abs=1e-4), f"{reference} gives {value} for perfect predictions"
