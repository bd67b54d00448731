"""The point-cloud synthesizer interface (``modality = "pointcloud"``).

A point-cloud synthesizer takes a cloud ``[N, 3]`` or an organised cloud ``[H, W, 3]`` (torch tensor or numpy
array; ``(0, 0, 0)`` marks an invalid point) and returns the perturbed cloud (same shape, dtype and point order) and
a per-point mask (``[N]`` or ``[H, W]``; float 0/1 for tensors, bool for arrays) with 1 where it moved a point.
Invalid points are passed through untouched. ``seed`` makes a call reproducible; without it the seed is drawn from
torch's global RNG, so ``torch.manual_seed`` makes a whole run reproducible as for image synthesizers.

Subclasses implement :meth:`PointCloudSynthesizer.synthesize_points` on numpy arrays with a numpy ``Generator``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from uad_plugins.errors import DataError
from uad_plugins.synth.base import Synthesizer

__all__ = ["PointCloudSynthesizer"]


class PointCloudSynthesizer(Synthesizer):
    """Base class of point-cloud synthesizer plugins (numpy in, numpy out; tensors converted at the edge)."""

    modality = "pointcloud"

    @abstractmethod
    def synthesize_points(self, points: np.ndarray, valid: np.ndarray, rng: np.random.Generator, *,
                          grid_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Perturb one cloud.

        Args:
            points: ``[N, 3]`` float32/float64 coordinates.
            valid: ``[N]`` bool, False for invalid points (which must come back unchanged).
            rng: the only source of randomness.
            grid_shape: ``(H, W)`` when the cloud is organised, else ``None``.

        Returns:
            ``(points' [N, 3] same dtype, mask [N] bool)``.
        """

    def synthesize(self, sample: Any) -> tuple[Any, Any]:
        """Perturb one cloud with a seed drawn from torch's global RNG."""
        return self(sample)

    def __call__(self, sample: Any, seed: int | None = None, valid: Any = None) -> tuple[Any, Any]:
        """Perturb ``sample`` (``[N, 3]`` or organised ``[H, W, 3]``); ``valid`` defaults to "not (0, 0, 0)"."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        rng = np.random.default_rng(seed)
        is_tensor = isinstance(sample, torch.Tensor)
        array = sample.detach().cpu().numpy() if is_tensor else np.asarray(sample)
        if array.ndim not in (2, 3) or array.shape[-1] != 3:
            raise DataError(f"{type(self).__name__} expects a cloud [N, 3] or an organised cloud [H, W, 3], got "
                            f"shape {tuple(array.shape)}.", hint="Call it once per cloud.")
        if array.dtype.kind not in "fiu":
            raise DataError(f"{type(self).__name__}: coordinates of type {array.dtype} are not numbers.")
        if array.dtype not in (np.float32, np.float64):
            array = array.astype(np.float64)
        grid_shape = tuple(array.shape[:2]) if array.ndim == 3 else None
        points = array.reshape(-1, 3)
        if valid is not None:
            valid = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
            if valid.size != len(points):
                raise DataError(f"valid mask has {valid.size} entries for {len(points)} points.")
            valid = valid.reshape(-1).astype(bool)
        else:
            valid = np.isfinite(points).all(axis=1) & (points != 0).any(axis=1)
            if not np.isfinite(points).all():
                bad = int((~np.isfinite(points).all(axis=1)).sum())
                raise DataError(f"{bad} of {len(points)} points have NaN or infinite coordinates.",
                                hint="Mark missing points as (0, 0, 0) (the invalid-point convention) or pass a "
                                     "valid mask.")
        out, mask = self.synthesize_points(points, valid, rng, grid_shape=grid_shape)
        out = out.reshape(array.shape)
        mask = mask.reshape(array.shape[:-1])
        if is_tensor:
            return torch.from_numpy(np.ascontiguousarray(out)), torch.from_numpy(mask.astype(np.float32))
        return out, mask.astype(bool)
