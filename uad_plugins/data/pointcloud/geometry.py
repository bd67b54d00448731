"""Geometry helpers for point clouds (numpy + scipy, never torch): checks, PCA frames, k-NN normals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uad_plugins.errors import ConfigError, DataError

__all__ = ["PlaneFrame", "check_points", "estimate_normals", "fit_plane", "orient_normals"]


def check_points(points: np.ndarray, valid: np.ndarray | None = None, *, min_valid: int = 1,
                 what: str = "point cloud", why: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Check ``points [N, 3]`` and return ``(points, valid)``.

    ``valid`` defaults to "not ``(0, 0, 0)``". Raises DataError for a wrong shape, NaN/inf coordinates at points
    not marked invalid, an empty cloud, or fewer than ``min_valid`` valid points (``why`` says what needs them).
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise DataError(f"{what} has shape {pts.shape}; expected [N, 3] (or organised [H, W, 3]).")
    if pts.dtype.kind not in "fiu":
        raise DataError(f"{what} has coordinates of type {pts.dtype}; expected numbers.")
    if len(pts) == 0:
        raise DataError(f"{what} is empty (0 points).", hint="Give a cloud with points.")
    if valid is None:
        finite = np.isfinite(pts).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise DataError(f"{what}: {len(bad)} of {len(pts)} points have NaN or infinite coordinates "
                            f"(the first is point {int(bad[0])}).",
                            hint="Mark missing points as (0, 0, 0) (the invalid-point convention) or pass a "
                                 "valid mask.")
        valid = (pts != 0).any(axis=1)
    else:
        valid = np.asarray(valid, dtype=bool).reshape(-1)
        if valid.shape != (len(pts),):
            raise DataError(f"{what}: valid mask has {valid.size} entries for {len(pts)} points.")
        if not np.isfinite(pts[valid]).all():
            raise DataError(f"{what}: points marked valid have NaN or infinite coordinates.",
                            hint="Mark them invalid in the valid mask.")
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise DataError(f"{what} has no valid points (all {len(pts)} are (0, 0, 0) or marked invalid).",
                        hint="Check the file: an MVTec 3D-AD xyz TIFF marks missing pixels with zeros.")
    if n_valid < min_valid:
        raise DataError(f"{what} has {n_valid} valid points; at least {min_valid} are needed{why}.",
                        hint="Give a denser cloud, or lower the neighbourhood size (knn).")
    return pts, valid


@dataclass(frozen=True)
class PlaneFrame:
    """The best-fit plane of a cloud by PCA: ``centre`` and ``axes`` (rows: two in-plane directions, normal)."""

    centre: np.ndarray  # [3]
    axes: np.ndarray  # [3, 3]; rows e1, e2 (in plane, by decreasing variance), e3 (plane normal)
    spread: np.ndarray  # [3] standard deviations along the axes

    def project(self, points: np.ndarray) -> np.ndarray:
        """In-plane coordinates ``[N, 2]`` of ``points``."""
        return (np.asarray(points, dtype=np.float64) - self.centre) @ self.axes[:2].T

    @property
    def normal(self) -> np.ndarray:
        """The plane normal ``e3``, signed to point along +z (else +y, else +x)."""
        return self.axes[2]


def fit_plane(points: np.ndarray) -> PlaneFrame:
    """PCA of ``points [M, 3]`` (valid points only): centre, principal axes and spreads.

    Raises DataError when the points do not span a surface (all at one place or on one line).
    """
    pts = np.asarray(points, dtype=np.float64)
    centre = pts.mean(axis=0)
    centred = pts - centre
    cov = centred.T @ centred / max(len(pts), 1)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    order = np.argsort(eigval)[::-1]
    eigval, axes = np.clip(eigval[order], 0, None), eigvec[:, order].T.copy()
    spread = np.sqrt(eigval)
    if spread[0] == 0 or spread[1] <= 1e-6 * spread[0]:  # sqrt of eigenvalue round-off is ~1e-8
        raise DataError(f"the {len(pts)} valid points do not span a surface (they lie at one place or on a line).",
                        hint="Surface anomalies need a 2-D surface; check the cloud.")
    normal = axes[2]
    for c in (2, 1, 0):  # a deterministic sign: the largest-index non-zero component is positive
        if abs(normal[c]) > 1e-12:
            if normal[c] < 0:
                axes[2] = -normal
            break
    if np.linalg.det(axes) < 0:  # keep a right-handed frame
        axes[1] = -axes[1]
    return PlaneFrame(centre=centre, axes=axes, spread=spread)


def estimate_normals(points: np.ndarray, queries: np.ndarray | None = None, *, k: int = 16, tree=None,
                     chunk: int = 65536) -> np.ndarray:
    """Unit normals by local PCA over the ``k`` nearest neighbours (the smallest principal direction).

    Args:
        points: ``[M, 3]`` the cloud (valid points only) the neighbours come from.
        queries: ``[Q, 3]`` where normals are wanted (default: every point of ``points``).
        k: neighbours per point, the point itself included; at least 3 and at most ``M``.
        tree: a ``scipy.spatial.cKDTree`` over ``points`` to reuse.
        chunk: queries per batch (bounds the memory to about ``chunk * k * 24`` bytes).

    Returns:
        ``[Q, 3]`` unit normals, not oriented (see :func:`orient_normals`).
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    if not isinstance(k, (int, np.integer)) or k < 3:
        raise ConfigError(f"normals need k >= 3 neighbours, got {k!r}.")
    if len(pts) < k:
        raise DataError(f"the cloud has {len(pts)} valid points, fewer than the {k} neighbours (knn) normals need.",
                        hint="Give a denser cloud or a smaller knn.")
    tree = cKDTree(pts) if tree is None else tree
    q = pts if queries is None else np.asarray(queries, dtype=np.float64)
    normals = np.empty((len(q), 3))
    for start in range(0, len(q), chunk):
        _, idx = tree.query(q[start:start + chunk], k=int(k))
        nb = pts[idx]  # [c, k, 3]
        nb = nb - nb.mean(axis=1, keepdims=True)
        cov = np.matmul(nb.transpose(0, 2, 1), nb)
        _, vec = np.linalg.eigh(cov)
        normals[start:start + chunk] = vec[:, :, 0]
    return normals


def orient_normals(normals: np.ndarray, points: np.ndarray, *, toward: np.ndarray | None = None,
                   direction: np.ndarray | None = None) -> np.ndarray:
    """Flip normals to one consistent side: toward a viewpoint ``toward`` or along a ``direction``."""
    if (toward is None) == (direction is None):
        raise ConfigError("orient_normals needs exactly one of toward= (a viewpoint) or direction=.")
    ref = (np.asarray(toward, dtype=np.float64) - points) if toward is not None else np.asarray(direction)[None]
    flip = np.einsum("ni,ni->n", normals, np.broadcast_to(ref, normals.shape)) < 0
    out = normals.copy()
    out[flip] *= -1
    return out
