"""The synthesizer interface.

An image synthesizer takes a float image ``[3, H, W]`` in ``[0, 1]`` and returns the perturbed image and a
mask ``[1, H, W]`` with 1 where it put an anomaly. Batches ``[B, 3, H, W]`` are handled item by item unless a
subclass does better. Passing ``seed`` makes the call deterministic without touching the caller's RNG state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

__all__ = ["Synthesizer"]


class Synthesizer(ABC):
    """Base class of every synthesizer plugin target."""

    #: the data it works on: ``image``, ``signal``, ``pointcloud`` or ``feature`` (feature maps inside a model)
    modality: ClassVar[str] = "image"

    @abstractmethod
    def synthesize(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturb one sample; return ``(perturbed, mask)``."""

    def __call__(self, sample: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturb one sample or a batch; with ``seed`` the result is reproducible."""
        if seed is None:
            return self._dispatch(sample)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._dispatch(sample)

    def _dispatch(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.modality == "image" and sample.ndim == 4:
            pairs = [self.synthesize(item) for item in sample]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        return self.synthesize(sample)
