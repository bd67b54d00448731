"""PNG previews of unorganised clouds: every point counts, holes stay empty, the region lands where its points are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from uad_plugins.data.pointcloud.render import _resample, render_preview


def _tilted_grid(rows: int = 250, cols: int = 400) -> np.ndarray:
    u, v = np.meshgrid(np.linspace(-1, 1, cols), np.linspace(-0.6, 0.6, rows))
    return np.stack([u, v, 0.05 * u + 0.02 * np.sin(4 * v)], axis=-1).reshape(-1, 3)


def test_resampled_height_follows_the_surface_with_up_at_the_top() -> None:
    """Every point of a dense scan counts (no subsampling): the height at each pixel centre is the surface's."""
    pts = _tilted_grid()
    uv, height = pts[:, :2], pts[:, 2]
    low, span = uv.min(axis=0), np.ptp(uv, axis=0)
    depth, region = _resample(uv, height, np.zeros(len(pts), bool), low, span, (120, 200))
    assert np.isfinite(depth).all() and not region.any()
    u = low[0] + (np.arange(200) + 0.5) * span[0] / 200
    v = low[1] + span[1] - (np.arange(120) + 0.5) * span[1] / 120  # row 0 is the top (largest v)
    truth = 0.05 * u[None, :] + 0.02 * np.sin(4 * v[:, None])
    np.testing.assert_allclose(depth, truth, atol=5e-4)


def test_holes_stay_empty_and_the_region_follows_its_points() -> None:
    pts = _tilted_grid()
    hole = np.hypot(pts[:, 0], pts[:, 1]) < 0.3
    pts = pts[~hole]
    mask = pts[:, 0] < -0.5
    low, span = pts[:, :2].min(axis=0), np.ptp(pts[:, :2], axis=0)
    depth, region = _resample(pts[:, :2], pts[:, 2], mask, low, span, (60, 100))
    assert np.isnan(depth[30, 50]) and not region[30, 50]  # the hole in the middle
    assert region[:, :20].all() and not region[:, 30:].any()  # the left quarter, u < -0.5


def test_render_preview_writes_a_png(tmp_path: Path) -> None:
    pts = _tilted_grid(60, 80)
    path = render_preview(pts, pts[:, 0] > 0.5, tmp_path / "sub" / "p.png", title="t")
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (640, 320)
