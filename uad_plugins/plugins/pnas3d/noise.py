"""Multi-octave 2-D Perlin (gradient) noise on a regular grid, numpy only (our own implementation)."""

from __future__ import annotations

import numpy as np

__all__ = ["fbm_grid", "perlin"]


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade curve 6t^5 - 15t^4 + 10t^3 (zero first and second derivative at 0 and 1)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gradient noise at the grid ``y[:, None] x x[None, :]`` (lattice units, non-negative coordinates).

    Random unit gradients sit on the integer lattice; each value is the faded bilinear blend of the four corner
    gradients' dot products with the offsets to the corners. The result is 0 on lattice points and lies in about
    ``[-0.71, 0.71]``.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    angles = rng.uniform(0.0, 2.0 * np.pi, (int(np.floor(y.max())) + 2, int(np.floor(x.max())) + 2))
    gx, gy = np.cos(angles), np.sin(angles)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[None, :], (y - y0)[:, None]
    r0, r1, c0, c1 = y0[:, None], y0[:, None] + 1, x0[None, :], x0[None, :] + 1
    n00 = gx[r0, c0] * fx + gy[r0, c0] * fy
    n10 = gx[r0, c1] * (fx - 1) + gy[r0, c1] * fy
    n01 = gx[r1, c0] * fx + gy[r1, c0] * (fy - 1)
    n11 = gx[r1, c1] * (fx - 1) + gy[r1, c1] * (fy - 1)
    u, v = _fade(fx), _fade(fy)
    bottom = n00 + u * (n10 - n00)
    top = n01 + u * (n11 - n01)
    return bottom + v * (top - bottom)


def fbm_grid(res: int, extent: tuple[float, float], scale: float, octaves: int, persistence: float,
             lacunarity: float, rng: np.random.Generator) -> np.ndarray:
    """Fractal (fBm) Perlin noise on a ``res x res`` grid, min-max normalised to ``[0, 1]``.

    Args:
        res: grid nodes per side.
        extent: ``(width, height)`` of the area the grid spans, relative to its longer side (so the longer one is
            1): the noise is isotropic in the physical plane even when the grid cells are not square.
        scale: lattice cells of the first octave along the longer side (larger = smaller blobs).
        octaves: number of octaves; octave ``k`` has frequency ``scale * lacunarity**k`` and amplitude
            ``persistence**k``.
        persistence, lacunarity: amplitude and frequency factors between octaves.
        rng: source of the gradients and of a random lattice offset per octave.

    Returns:
        ``[res, res]`` float64 in ``[0, 1]`` (rows follow the second axis, columns the first); all zeros when
        the field is constant.
    """
    t = np.linspace(0.0, 1.0, res)
    total = np.zeros((res, res))
    for k in range(octaves):
        freq = scale * lacunarity**k
        offset = rng.uniform(0.0, 1.0, 2)
        total += persistence**k * perlin(t * extent[0] * freq + offset[0], t * extent[1] * freq + offset[1], rng)
    low, high = total.min(), total.max()
    return (total - low) / (high - low) if high > low else np.zeros_like(total)
