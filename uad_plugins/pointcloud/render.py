"""PNG previews of point clouds with an anomaly region marked (matplotlib's Agg canvas, no pyplot state).

Organised clouds are drawn as images on their ``H x W`` grid: a shaded relief (light on the surface normals of the
grid, so that small bumps and dents show) and the depth with the region in red. Other clouds are drawn as scatter
plots on their best-fit plane (PCA): coloured by the height above the plane, and grey with the region in red.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from uad_plugins.pointcloud.geometry import fit_plane

__all__ = ["render_preview"]

_RED = np.array([0.9, 0.1, 0.1])


def render_preview(points: np.ndarray, mask: np.ndarray, path: str | os.PathLike[str], *,
                   grid_shape: tuple[int, int] | None = None, valid: np.ndarray | None = None,
                   title: str | None = None, max_points: int = 60_000, dpi: int = 80) -> Path:
    """Write a two-panel PNG of ``points [N, 3]`` with ``mask [N]`` marked; returns the path.

    Args:
        points: the (perturbed) cloud.
        mask: per-point anomaly mask (bool or 0/1), same order as ``points``.
        path: PNG file to write.
        grid_shape: ``(H, W)`` for an organised cloud (image panels), else scatter panels.
        valid: ``[N]`` bool; default "not (0, 0, 0)".
        title: figure title.
        max_points: scatter panels draw at most this many points (all region points are kept).
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
        _scatter(left, right, pts, mask, valid, max_points)
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


def _scatter(left, right, pts: np.ndarray, mask: np.ndarray, valid: np.ndarray, max_points: int) -> None:
    index = np.flatnonzero(valid)
    if len(index) < 3:
        return
    try:
        frame = fit_plane(pts[index])
        e3 = frame.normal
        for axis in np.eye(3):  # the in-plane direction closest to x (else y) runs left to right
            e1 = axis - (axis @ e3) * e3
            if np.linalg.norm(e1) > 0.3:
                break
        e1 = e1 / np.linalg.norm(e1)
        uv = (pts[index] - frame.centre) @ np.stack([e1, np.cross(e3, e1)]).T
        height = (pts[index] - frame.centre) @ e3
    except Exception:  # noqa: BLE001 - a degenerate cloud still gets a preview, in x/y
        uv, height = pts[index, :2], pts[index, 2]
    region = mask[index]
    keep = np.zeros(len(index), dtype=bool)
    keep[np.linspace(0, len(index) - 1, min(max_points, len(index))).astype(int)] = True
    keep |= region
    size = max(0.5, min(6.0, 4e4 / max(int(keep.sum()), 1)))
    left.scatter(uv[keep, 0], uv[keep, 1], c=height[keep], cmap="viridis", s=size, linewidths=0)
    left.set_title("height above the best-fit plane", fontsize=9)
    normal = keep & ~region
    right.scatter(uv[normal, 0], uv[normal, 1], c="0.7", s=size, linewidths=0)
    right.scatter(uv[region, 0], uv[region, 1], c=[_RED], s=size, linewidths=0)
    for ax in (left, right):
        ax.set_aspect("equal")
