"""PNG previews of point clouds with an anomaly region marked (matplotlib's Agg canvas, no pyplot state).

Organised clouds are drawn as images on their ``H x W`` grid: a shaded relief (light on the surface normals of the
grid, so that small bumps and dents show) and the depth with the region in red. Other clouds are projected on their
best-fit plane (PCA) and resampled on a pixel grid (height above the plane from the nearest points; no subsampling,
so a dense scan shows no sampling stripes): a shaded relief of that height, and the height with the region in red.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from uad_plugins.data.pointcloud.geometry import fit_plane

__all__ = ["render_preview"]

_RED = np.array([0.9, 0.1, 0.1])


def render_preview(points: np.ndarray, mask: np.ndarray, path: str | os.PathLike[str], *,
                   grid_shape: tuple[int, int] | None = None, valid: np.ndarray | None = None,
                   title: str | None = None, resolution: int = 320, dpi: int = 80) -> Path:
    """Write a two-panel PNG of ``points [N, 3]`` with ``mask [N]`` marked; returns the path.

    Args:
        points: the (perturbed) cloud.
        mask: per-point anomaly mask (bool or 0/1), same order as ``points``.
        path: PNG file to write.
        grid_shape: ``(H, W)`` for an organised cloud (image panels), else scatter panels.
        valid: ``[N]`` bool; default "not (0, 0, 0)".
        title: figure title.
        resolution: unorganised clouds: pixels along the longer side of the projection, at most (fewer for sparse
            clouds, about two points per pixel).
        dpi: resolution (the figure is 8 x 4 inches).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    mask = np.asarray(mask).reshape(-1).astype(bool)
    valid = (pts != 0).any(axis=1) & np.isfinite(pts).all(axis=1) if valid is None else \
        np.asarray(valid).reshape(-1).astype(bool)
    fig = Figure(figsize=(8, 4), dpi=dpi)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    if grid_shape is not None:
        _organised(left, right, pts, mask, valid, grid_shape)
    else:
        _projected(left, right, pts, mask, valid, resolution)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    fraction = mask[valid].mean() if valid.any() else 0.0
    fig.suptitle(title or "", fontsize=10)
    right.set_title(f"region: {int(mask.sum())} points ({100 * fraction:.1f}% of valid)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _organised(left, right, pts: np.ndarray, mask: np.ndarray, valid: np.ndarray,
               grid_shape: tuple[int, int]) -> None:
    h, w = grid_shape
    grid = pts.reshape(h, w, 3)
    ok = valid.reshape(h, w)
    # surface normals from the grid's tangents; light from the upper left, toward the sensor
    du = np.zeros_like(grid)
    dv = np.zeros_like(grid)
    du[:, 1:-1] = grid[:, 2:] - grid[:, :-2]
    dv[1:-1] = grid[2:] - grid[:-2]
    normal = np.cross(du, dv)
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    view = -grid.reshape(-1, 3)[valid].mean(axis=0) if valid.any() else np.array([0.0, 0.0, -1.0])
    view = view / (np.linalg.norm(view) or 1.0)
    flip = np.einsum("hwc,c->hw", normal, view) < 0
    normal[flip] *= -1
    light = view + 0.4 * np.cross(view, [1.0, 0.0, 0.0]) + 0.4 * np.cross(view, [0.0, 1.0, 0.0])
    light = light / (np.linalg.norm(light) or 1.0)
    shade = np.clip(np.einsum("hwc,c->hw", normal, light), 0, 1)
    shade_ok = ok.copy()
    shade_ok[:, [0, -1]] = False
    shade_ok[[0, -1], :] = False
    neighbours_ok = shade_ok.copy()
    neighbours_ok[:, 1:-1] &= ok[:, 2:] & ok[:, :-2]
    neighbours_ok[1:-1] &= ok[2:] & ok[:-2]
    relief = np.where(neighbours_ok, shade, np.nan)
    left.imshow(relief, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    left.set_title("shaded relief", fontsize=9)
    depth = np.where(ok, grid[..., 2], np.nan)
    right.imshow(depth, cmap="viridis", interpolation="nearest")
    overlay = np.zeros((h, w, 4))
    overlay[..., :3] = _RED
    overlay[..., 3] = mask.reshape(h, w) * 0.55
    right.imshow(overlay, interpolation="nearest")
    if mask.any():
        right.contour(mask.reshape(h, w).astype(float), levels=[0.5], colors=["red"], linewidths=0.8)


def _plane_coordinates(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(uv [N, 2], height [N])`` on the best-fit plane; the in-plane axis closest to x (else y) runs left to right."""
    try:
        frame = fit_plane(pts)
        e3 = frame.normal
        for axis in np.eye(3):
            e1 = axis - (axis @ e3) * e3
            if np.linalg.norm(e1) > 0.3:
                break
        e1 = e1 / np.linalg.norm(e1)
        return (pts - frame.centre) @ np.stack([e1, np.cross(e3, e1)]).T, (pts - frame.centre) @ e3
    except Exception:  # noqa: BLE001 - a degenerate cloud still gets a preview, in x/y
        return pts[:, :2], pts[:, 2]


def _resample(uv: np.ndarray, height: np.ndarray, region: np.ndarray, low: np.ndarray, span: np.ndarray,
              shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Height (inverse-distance mean of the 4 nearest points) and region (nearest point) at each pixel centre; NaN
    and False where no point lies within 1.5 pixels. Row 0 is the top of the plane (largest v)."""
    from scipy.spatial import cKDTree

    h, w = shape
    cols = low[0] + (np.arange(w) + 0.5) * span[0] / w
    rows = low[1] + span[1] - (np.arange(h) + 0.5) * span[1] / h
    centres = np.stack(np.meshgrid(cols, rows), axis=-1).reshape(-1, 2)
    k = min(4, len(uv))
    dist, near = cKDTree(uv).query(centres, k=k)
    dist, near = dist.reshape(len(centres), k), near.reshape(len(centres), k)
    weight = 1.0 / np.maximum(dist, 1e-12)
    depth = (weight * height[near]).sum(axis=1) / weight.sum(axis=1)
    covered = dist[:, 0] <= 1.5 * max(span[0] / w, span[1] / h)
    depth = np.where(covered, depth, np.nan).reshape(h, w)
    return depth, (region[near[:, 0]] & covered).reshape(h, w)


def _hillshade(depth: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Lambert shading of a height image lit from the upper left (NaN where there is no height)."""
    filled = np.where(np.isfinite(depth), depth, np.nanmean(depth) if np.isfinite(depth).any() else 0.0)
    if min(depth.shape) < 2:
        return np.where(np.isfinite(depth), 0.8, np.nan)
    gy, gx = np.gradient(filled, dy, dx)
    normal = np.stack([-gx, gy, np.ones_like(gx)], axis=-1)  # rows grow downwards: flip the y slope
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    light = np.array([-1.0, 1.0, 1.5]) / np.linalg.norm([-1.0, 1.0, 1.5])
    return np.where(np.isfinite(depth), np.clip(normal @ light, 0.0, 1.0), np.nan)


def _projected(left, right, pts: np.ndarray, mask: np.ndarray, valid: np.ndarray, resolution: int) -> None:
    index = np.flatnonzero(valid)
    if len(index) < 3:
        return
    uv, height = _plane_coordinates(pts[index])
    low, span = uv.min(axis=0), np.ptp(uv, axis=0)
    span[span <= 0] = 1e-9
    longer = int(np.clip(np.sqrt(len(index) / 2 * span.max() / span.min()), 8, resolution))
    w, h = (longer, max(1, round(longer * span[1] / span[0]))) if span[0] >= span[1] else \
        (max(1, round(longer * span[0] / span[1])), longer)
    depth, region = _resample(uv, height, mask[index], low, span, (h, w))
    extent = (low[0], low[0] + span[0], low[1], low[1] + span[1])
    left.imshow(_hillshade(depth, span[0] / w, span[1] / h), cmap="gray", vmin=0, vmax=1, interpolation="nearest",
                extent=extent)
    left.set_title("shaded relief (height above the best-fit plane)", fontsize=9)
    right.imshow(depth, cmap="viridis", interpolation="nearest", extent=extent)
    overlay = np.zeros((h, w, 4))
    overlay[..., :3] = _RED
    overlay[..., 3] = region * 0.7
    right.imshow(overlay, interpolation="nearest", extent=extent)
    for ax in (left, right):
        ax.set_aspect("equal")
