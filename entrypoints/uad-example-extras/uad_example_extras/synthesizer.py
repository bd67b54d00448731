"""``plugin:scratch``: thin straight scratches drawn into an image."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from uad_plugins.errors import ConfigError
from uad_plugins.synth.base import Synthesizer


def _range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    a, b = (float(v) for v in value)
    if not low <= a <= b <= high:
        raise ConfigError(f"scratch: {name} must be [a, b] with {low} <= a <= b <= {high}, got {list(value)}.")
    return a, b


class ScratchSynthesizer(Synthesizer):
    """Draw ``count`` straight scratches; each moves the pixels it covers toward black or white by ``contrast``.

    Args:
        count: inclusive range of scratches per image.
        length: scratch length as a share of the shorter image side.
        width: scratch width in pixels.
        contrast: blend factor toward black (a dark scratch) or white (a bright one), chosen per scratch.
    """

    modality = "image"

    def __init__(self, count: Sequence[int] = (1, 3), length: Sequence[float] = (0.2, 0.6),
                 width: Sequence[float] = (1.0, 3.0), contrast: Sequence[float] = (0.3, 0.7)) -> None:
        low, high = _range("count", count, 1, 100)
        self.count = (int(low), int(high))
        self.length = _range("length", length, 0.0, 2.0)
        self.width = _range("width", width, 0.5, 64.0)
        self.contrast = _range("contrast", contrast, 0.0, 1.0)

    @staticmethod
    def _uniform(bounds: tuple[float, float]) -> float:
        return bounds[0] + (bounds[1] - bounds[0]) * float(torch.rand(()))

    def synthesize(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if sample.ndim != 3 or sample.shape[0] != 3:
            raise ConfigError(f"scratch expects an image [3, H, W], got shape {tuple(sample.shape)}.")
        image = sample.detach().float().clone()
        _, h, w = image.shape
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        mask = torch.zeros(h, w, dtype=torch.bool)
        n = int(torch.randint(self.count[0], self.count[1] + 1, ()))
        for _ in range(n):
            start = torch.rand(2) * torch.tensor([h - 1.0, w - 1.0])
            angle = torch.rand(()) * torch.pi
            direction = torch.stack([torch.sin(angle), torch.cos(angle)])
            end = start + direction * self._uniform(self.length) * min(h, w)
            # distance of every pixel centre to the segment start-end
            seg = end - start
            t = (((ys - start[0]) * seg[0] + (xs - start[1]) * seg[1]) / max(float(seg @ seg), 1e-6)).clamp(0, 1)
            dist = torch.hypot(ys - (start[0] + t * seg[0]), xs - (start[1] + t * seg[1]))
            line = dist <= self._uniform(self.width) / 2
            target = 0.0 if bool(torch.rand(()) < 0.5) else 1.0
            alpha = self._uniform(self.contrast)
            image[:, line] = image[:, line] * (1 - alpha) + target * alpha
            mask |= line
        changed = (image - sample.float()).abs().amax(0) > 1e-6
        return image.clamp(0, 1).to(sample.dtype), (mask & changed).float()[None]
