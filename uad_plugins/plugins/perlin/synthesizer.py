"""``plugin:perlin``: anomalib's :class:`PerlinAnomalyGenerator` as a uad synthesizer."""

from __future__ import annotations

from pathlib import Path

import torch

from uad_plugins.errors import ConfigError
from uad_plugins.synth.base import Synthesizer

__all__ = ["PerlinSynthesizer"]


class PerlinSynthesizer(Synthesizer):
    """Perlin-noise masks filled with a texture (or noise) and blended into the image.

    Args:
        anomaly_source_path: folder of texture images; ``None`` uses random noise textures.
        probability: chance of perturbing an image (1.0 always; an unperturbed image gets an empty mask).
        blend_factor: opacity range ``(low, high)`` of the anomaly.
        rotation_range: rotation range of the noise pattern in degrees.
        seed: seed of the random choices anomalib's generator fixes at construction (its solarize threshold), so
            that two instances with the same arguments make the same anomalies for the same call seed.
    """

    modality = "image"

    def __init__(self, anomaly_source_path: str | None = None, probability: float = 1.0,
                 blend_factor: tuple[float, float] = (0.2, 1.0),
                 rotation_range: tuple[float, float] = (-90.0, 90.0), seed: int = 0) -> None:
        from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"perlin: probability must be in [0, 1], got {probability}.")
        low, high = blend_factor
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(f"perlin: blend_factor must satisfy 0 <= low <= high <= 1, got {blend_factor}.")
        if anomaly_source_path is not None and not Path(anomaly_source_path).is_dir():
            raise ConfigError(f"perlin: anomaly_source_path {anomaly_source_path!r} is not a folder.",
                              hint="Give a folder of texture images, or leave it unset for noise textures.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.generator = PerlinAnomalyGenerator(
                anomaly_source_path=anomaly_source_path, probability=probability,
                blend_factor=(float(low), float(high)), rotation_range=tuple(rotation_range))

    def synthesize(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if sample.ndim != 3 or sample.shape[0] != 3:
            raise ConfigError(f"perlin expects an image [3, H, W], got shape {tuple(sample.shape)}.")
        image, mask = self.generator(sample.float())
        return image.clamp(0, 1), mask.reshape(1, *sample.shape[-2:]).float()
