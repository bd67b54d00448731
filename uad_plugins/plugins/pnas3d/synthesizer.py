"""``plugin:pnas3d``: 3D-PNAS surface anomalies (Perlin-noise bulges and dents along the surface normals).

Cheng & Du, *3D-PNAS: 3D Industrial Surface Anomaly Synthesis with Perlin Noise*, arXiv 2504.12856 (2025). No
public code; this is our reading of the paper (see README.md for what is the paper's and what is ours).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from uad_plugins.data.pointcloud.geometry import check_points, estimate_normals, fit_plane, orient_normals
from uad_plugins.data.pointcloud.synthesizer import PointCloudSynthesizer
from uad_plugins.errors import ConfigError
from uad_plugins.plugins.pnas3d.noise import fbm_grid

__all__ = ["Pnas3dResult", "Pnas3dSynthesizer"]

_HINT = "See 'uad plugins show pnas3d' for the defaults."
SIGNS = ("bulge", "dent", "random")
STRENGTH_MODES = ("diag_frac", "abs")
ORIENTATIONS = ("auto", "sensor", "plane")


def _range(name: str, value: float | Sequence[float], low: float, high: float, *, open_low: bool = False,
           open_high: bool = False) -> tuple[float, float]:
    """A number or an ordered ``[low, high]`` range, inside ``(low|[low, high)|high]``."""
    pair = (value, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        a, b = (float(v) for v in pair)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ConfigError(f"pnas3d: {name} must be a number or a range [low, high], got {value!r}.",
                          hint=_HINT) from None
    ok = math.isfinite(a) and math.isfinite(b) and a <= b
    ok = ok and (a > low if open_low else a >= low) and (b < high if open_high else b <= high)
    if not ok:
        bounds = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ConfigError(f"pnas3d: {name} must be a number or an ordered range within {bounds}, got {value!r}.",
                          hint=_HINT)
    return a, b


@dataclass
class Pnas3dResult:
    """Everything one call made (``generate``): the cloud, the mask and the intermediate quantities."""

    points: np.ndarray  # [N, 3] perturbed, input dtype
    mask: np.ndarray  # [N] bool, points that moved
    noise: np.ndarray  # [N] noise value in [0, 1] per point (0 at invalid points)
    normals: np.ndarray  # [N, 3] oriented unit normals at region points (0 elsewhere)
    displacement: np.ndarray  # [N] signed displacement along the normal (0 outside the region)
    params: dict = field(default_factory=dict)  # the values drawn for this call


class Pnas3dSynthesizer(PointCloudSynthesizer):
    """Perlin-noise regions on a cloud's best-fit plane, pushed out (bulge) or in (dent) along the normals.

    1. PCA of the valid points; their in-plane coordinates (the top two principal directions).
    2. fBm Perlin noise on a ``grid_res x grid_res`` grid over the projected bounds, min-max normalised.
    3. Bilinear sampling at every point; the region is where the value exceeds ``threshold`` (retried up to
       ``max_tries`` times with new noise when no point exceeds it).
    4. Normals by PCA over the ``knn`` nearest neighbours, oriented toward the sensor (organised clouds) or along
       the plane normal; each region point moves by ``sign * alpha * w`` along its normal, where ``w`` rises from
       0 at the region's edge to 1 at its strongest point and ``alpha`` is the peak displacement.

    Args:
        grid_res: noise grid nodes per side.
        noise_scale: lattice cells of the first octave along the longer side of the projected bounds (larger =
            smaller regions); a number or a range ``[low, high]`` drawn per call.
        octaves, persistence, lacunarity: fBm octaves, amplitude and frequency factors between octaves.
        threshold: region threshold on the normalised noise, in ``(0, 1)``; number or range.
        strength: peak displacement; a fraction of the valid points' bounding-box diagonal (``strength_mode:
            diag_frac``) or in the cloud's units (``abs``); number or range.
        strength_mode: ``diag_frac`` or ``abs``.
        sign: ``bulge`` (along the oriented normal), ``dent`` (against it) or ``random`` (either, p = 0.5).
        knn: neighbours for the normals (the point included), at least 3.
        orient: ``sensor`` (normals face a sensor at the origin, as in MVTec 3D-AD), ``plane`` (normals face the
            side of the plane normal whose z is positive), or ``auto`` (sensor for organised clouds, else plane).
        max_tries: noise draws before giving up on an empty region (the cloud then comes back unchanged).
    """

    def __init__(self, grid_res: int = 256, noise_scale: float | Sequence[float] = (2.0, 6.0), octaves: int = 4,
                 persistence: float = 0.5, lacunarity: float = 2.0, threshold: float | Sequence[float] = 0.7,
                 strength: float | Sequence[float] = (0.005, 0.02), strength_mode: str = "diag_frac",
                 sign: str = "random", knn: int = 16, orient: str = "auto", max_tries: int = 10) -> None:
        for name, value, low in (("grid_res", grid_res, 2), ("octaves", octaves, 1), ("knn", knn, 3),
                                 ("max_tries", max_tries, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"pnas3d: {name} must be a whole number >= {low}, got {value!r}.", hint=_HINT)
        if octaves > 12:
            raise ConfigError(f"pnas3d: octaves must be at most 12, got {octaves}.", hint=_HINT)
        self.noise_scale = _range("noise_scale", noise_scale, 0.0, 1e4, open_low=True)
        self.threshold = _range("threshold", threshold, 0.0, 1.0, open_low=True, open_high=True)
        self.strength = _range("strength", strength, 0.0, math.inf, open_low=True, open_high=True)
        self.persistence = _range("persistence", persistence, 0.0, 1.0, open_low=True)[0]
        self.lacunarity = _range("lacunarity", lacunarity, 1.0, 16.0)[0]
        for name, value, allowed in (("strength_mode", strength_mode, STRENGTH_MODES), ("sign", sign, SIGNS),
                                     ("orient", orient, ORIENTATIONS)):
            if value not in allowed:
                raise ConfigError(f"pnas3d: {name} must be one of {list(allowed)}, got {value!r}.", hint=_HINT)
        self.grid_res, self.octaves, self.knn, self.max_tries = grid_res, octaves, knn, max_tries
        self.strength_mode, self.sign, self.orient = strength_mode, sign, orient

    def synthesize_points(self, points: np.ndarray, valid: np.ndarray, rng: np.random.Generator, *,
                          grid_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        result = self.generate(points, valid, rng, grid_shape=grid_shape)
        return result.points, result.mask

    def generate(self, points: np.ndarray, valid: np.ndarray | None, rng: np.random.Generator, *,
                 grid_shape: tuple[int, int] | None = None, normals: np.ndarray | None = None) -> Pnas3dResult:
        """One synthesis with every intermediate quantity (``normals [N, 3]``: use these instead of estimating)."""
        points, valid = check_points(points, valid, min_valid=self.knn,
                                     why=f" (the normals use knn = {self.knn} neighbours)")
        dtype = points.dtype if points.dtype in (np.float32, np.float64) else np.float64
        index = np.flatnonzero(valid)
        pts = points[index].astype(np.float64)
        frame = fit_plane(pts)
        uv = frame.project(pts)
        low, ext = uv.min(axis=0), np.ptp(uv, axis=0)
        ext = np.where(ext > 0, ext, 1.0)
        diag = float(np.linalg.norm(np.ptp(pts, axis=0)))
        params = {
            "noise_scale": float(rng.uniform(*self.noise_scale)),
            "threshold": float(rng.uniform(*self.threshold)),
            "strength": float(rng.uniform(*self.strength)),
            "sign": self.sign if self.sign != "random" else ("bulge" if rng.random() < 0.5 else "dent"),
        }
        alpha = params["strength"] * (diag if self.strength_mode == "diag_frac" else 1.0)
        params["alpha"] = alpha
        coords = ((uv - low) / ext * (self.grid_res - 1)).T[::-1]  # (row = 2nd axis, col = 1st axis)
        from scipy.ndimage import map_coordinates

        tau = params["threshold"]
        params["tries"] = 0
        while params["tries"] < self.max_tries:
            params["tries"] += 1
            grid = fbm_grid(self.grid_res, tuple(ext / ext.max()), params["noise_scale"], self.octaves,
                            self.persistence, self.lacunarity, rng)
            values = map_coordinates(grid, coords, order=1, mode="nearest")
            region = values > tau
            if region.any():
                break
        n = len(points)
        field_values = np.zeros(n)
        field_values[index] = values
        out = points.astype(dtype, copy=True)
        all_normals, disp = np.zeros((n, 3)), np.zeros(n)
        if region.any():
            r_index = index[region]
            if normals is not None:
                nrm = np.asarray(normals, dtype=np.float64).reshape(-1, 3)[r_index]
                nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-300)
            else:
                nrm = estimate_normals(pts, pts[region], k=self.knn)
            mode = self.orient if self.orient != "auto" else ("sensor" if grid_shape is not None else "plane")
            nrm = (orient_normals(nrm, pts[region], toward=np.zeros(3)) if mode == "sensor"
                   else orient_normals(nrm, pts[region], direction=frame.normal))
            peak = values[region].max()
            weight = (values[region] - tau) / (peak - tau)
            d = (1.0 if params["sign"] == "bulge" else -1.0) * alpha * weight
            out[r_index] = (pts[region] + d[:, None] * nrm).astype(dtype)
            all_normals[r_index], disp[r_index] = nrm, d
            params["orient"] = mode
        mask = np.zeros(n, dtype=bool)
        mask[index] = (out[index] != points[index]).any(axis=1)  # what actually moved (float rounding aside)
        disp[~mask] = 0.0
        return Pnas3dResult(points=out, mask=mask, noise=field_values, normals=all_normals, displacement=disp,
                            params=params)
