"""``plugin:perlin_texture``: DRAEM-style Perlin-mask texture anomalies behind the uad synthesizer interface."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from uad_plugins.errors import ConfigError
from uad_plugins.plugins.perlin_texture.textures import FAMILIES, augment_texture, perlin_noise, procedural_texture
from uad_plugins.synth.base import Synthesizer

__all__ = ["PerlinTextureSynthesizer"]

_HINT = "See 'uad plugins show perlin_texture' for the defaults."


def _pair(name: str, value: Sequence[float] | float) -> tuple[float, float]:
    """Read an ordered ``(low, high)`` range; a single number means a fixed value."""
    if isinstance(value, (int, float)):
        value = (value, value)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"perlin_texture: {name} must be a pair [low, high] of numbers, got {value!r}.",
                          hint=_HINT) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ConfigError(f"perlin_texture: {name} must be an ordered range [low, high], got {list(value)}.",
                          hint=_HINT)
    return low, high


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class PerlinTextureSynthesizer(Synthesizer):
    """Perlin-noise masks filled with a texture and blended into the image (DRAEM's anomaly synthesis).

    Per call: Perlin noise with ``2^k`` grid cells across the image's longer side per noise axis (``k`` drawn
    independently per axis so that ``perlin_scale`` bounds the cell count), rotated by an angle from ``rotation``
    (evaluated on rotated coordinates, so no empty corners) and thresholded at ``threshold`` gives the mask ``M``.
    A texture ``T`` is a random image of ``texture_dir`` resized to the image, or a
    procedural texture of one of ``families``; with ``augment`` it goes through 3 random DRAEM operations. The result
    is ``I * (1 - M) + M * (beta * T + (1 - beta) * I)`` with ``beta`` drawn from ``beta``, and the mask is ``M``.
    An empty mask is redrawn up to ``MAX_TRIES`` times, then the noise is stretched to ``[-1, 1]`` (as anomalib).

    Args:
        texture_dir: folder of texture images, searched recursively (DTD: ``dtd/images``); ``None`` uses procedural
            textures.
        families: procedural texture families (``noise``, ``stripes``, ``checker``, ``cells``).
        beta: opacity range of the texture, ``0 < low <= high <= 1``.
        perlin_scale: Perlin grid cells across the image per axis, powers of two, ``1 <= low <= high``.
        threshold: noise level above which a pixel is anomalous, in ``[0, 1)``.
        rotation: rotation of the noise in degrees, within ``[-180, 180]``.
        augment: apply 3 random colour/intensity operations to the texture.
        probability: chance of perturbing an image; an unperturbed image gets an empty mask.
    """

    modality = "image"
    MAX_TRIES = 10

    def __init__(self, texture_dir: str | Path | None = None,
                 families: Sequence[str] | str = ("noise", "stripes", "checker", "cells"),
                 beta: Sequence[float] = (0.1, 1.0), perlin_scale: Sequence[int] = (1, 32), threshold: float = 0.5,
                 rotation: Sequence[float] = (-90.0, 90.0), augment: bool = True, probability: float = 1.0) -> None:
        self.families = (families,) if isinstance(families, str) else tuple(str(f) for f in families)
        unknown = [f for f in self.families if f not in FAMILIES]
        if not self.families or unknown:
            raise ConfigError(f"perlin_texture: unknown texture families {unknown or self.families!r}.",
                              hint=f"Choose one or more of {', '.join(FAMILIES)}.")
        self.beta = _pair("beta", beta)
        if not 0.0 < self.beta[0] <= self.beta[1] <= 1.0:
            raise ConfigError(f"perlin_texture: beta (texture opacity) must satisfy 0 < low <= high <= 1, got "
                              f"{list(beta)}.", hint=_HINT)
        low, high = _pair("perlin_scale", perlin_scale)
        if low < 1 or any(v != int(v) or int(v) & (int(v) - 1) for v in (low, high)):
            raise ConfigError(f"perlin_texture: perlin_scale must be powers of two >= 1, got {list(perlin_scale)}.",
                              hint="DRAEM uses [1, 32] (2^0 to 2^5 cells across the image).")
        self.scale_exponents = (int(low).bit_length() - 1, int(high).bit_length() - 1)
        if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) < 1.0:
            raise ConfigError(f"perlin_texture: threshold must be in [0, 1), got {threshold!r}.", hint=_HINT)
        self.threshold = float(threshold)
        self.rotation = _pair("rotation", rotation)
        if not -180.0 <= self.rotation[0] <= self.rotation[1] <= 180.0:
            raise ConfigError(f"perlin_texture: rotation must lie within [-180, 180] degrees, got {list(rotation)}.",
                              hint=_HINT)
        if not isinstance(probability, (int, float)) or not 0.0 <= float(probability) <= 1.0:
            raise ConfigError(f"perlin_texture: probability must be in [0, 1], got {probability!r}.", hint=_HINT)
        self.probability = float(probability)
        self.augment = bool(augment)
        self.texture_dir = None if texture_dir in (None, "") else Path(str(texture_dir)).expanduser()
        self.texture_files: list[Path] = []
        if self.texture_dir is not None:
            from uad_plugins.data.checks import list_image_files

            if not self.texture_dir.is_dir():
                raise ConfigError(f"perlin_texture: texture_dir {str(self.texture_dir)!r} is not a folder.",
                                  hint="Give a folder of texture images (for DTD: dtd/images), or leave texture_dir "
                                  "unset to use procedural textures.")
            self.texture_files = list_image_files(self.texture_dir)  # sorted: the same order on every machine
            if not self.texture_files:
                raise ConfigError(f"perlin_texture: texture_dir {str(self.texture_dir)!r} has no images.",
                                  hint="It is searched recursively for .png/.jpg/.jpeg/.bmp/.tif files; leave "
                                  "texture_dir unset to use procedural textures.")

    # ------------------------------------------------------------------------------------------------ parts
    def _perlin_mask(self, height: int, width: int) -> torch.Tensor:
        """A binary ``[H, W]`` mask from rotated, thresholded Perlin noise (CPU)."""
        low, high = self.scale_exponents
        noise = torch.zeros(height, width)
        for _ in range(self.MAX_TRIES):
            cells = (2.0 ** int(torch.randint(low, high + 1, ())), 2.0 ** int(torch.randint(low, high + 1, ())))
            noise = perlin_noise(height, width, cells, _uniform(*self.rotation))
            mask = noise > self.threshold
            if bool(mask.any()):
                return mask
        return (noise - noise.min()) / (noise.max() - noise.min()).clamp_min(1e-12) * 2 - 1 > self.threshold

    def _texture(self, height: int, width: int) -> torch.Tensor:
        """A texture ``[3, H, W]`` in ``[0, 1]`` (CPU): a random file, resized, or a procedural one."""
        if self.texture_files:
            from torchvision.transforms.v2 import functional as TF

            from uad_plugins.data.checks import read_rgb_image

            path = self.texture_files[int(torch.randint(len(self.texture_files), ()))]
            texture = torch.from_numpy(read_rgb_image(path)).permute(2, 0, 1).float() / 255.0
            if texture.shape[-2:] != (height, width):
                texture = TF.resize(texture, [height, width], antialias=True)
        else:
            texture = procedural_texture(height, width, self.families)
        return augment_texture(texture) if self.augment else texture.clamp(0, 1)

    # ------------------------------------------------------------------------------------------------ interface
    def synthesize(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend one texture anomaly into ``sample`` ``[3, H, W]``; return ``(image, mask [1, H, W])``."""
        if sample.ndim != 3 or sample.shape[0] != 3:
            raise ConfigError(f"perlin_texture expects an image [3, H, W], got shape {tuple(sample.shape)}.")
        image = sample.float()
        height, width = image.shape[-2:]
        if float(torch.rand(())) >= self.probability:
            return image.clamp(0, 1), torch.zeros(1, height, width, device=image.device)
        mask = self._perlin_mask(height, width).to(image.device)[None].float()
        texture = self._texture(height, width).to(image.device)
        beta = _uniform(*self.beta)
        out = image * (1 - mask) + mask * (beta * texture + (1 - beta) * image)
        return out.clamp(0, 1), mask

    def __repr__(self) -> str:
        source = str(self.texture_dir) if self.texture_dir is not None else f"procedural {list(self.families)}"
        return (f"PerlinTextureSynthesizer(texture={source}, beta={list(self.beta)}, perlin_scale="
                f"{[2 ** e for e in self.scale_exponents]}, threshold={self.threshold}, rotation="
                f"{list(self.rotation)}, augment={self.augment}, probability={self.probability})")
