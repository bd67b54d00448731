"""``plugin:cutpaste``: CutPaste anomalies (normal patch, scar, or either) behind the uad synthesizer interface."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from uad_plugins.errors import ConfigError
from uad_plugins.synth.base import Synthesizer

__all__ = ["VARIANTS", "CutPasteSynthesizer"]

VARIANTS = ("normal", "scar", "union")
_ALIASES = {"binary": "union"}  # OneNIP's name for "either variant"
_HINT = "See 'uad plugins show cutpaste' for the defaults."


def _pair(name: str, value: Sequence[float] | float, *, integer: bool = False) -> tuple[float, float]:
    """Read a ``(low, high)`` range (a single number means a fixed value) and check it is ordered."""
    if isinstance(value, (int, float)):
        value = (value, value)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"cutpaste: {name} must be a pair [low, high] of numbers, got {value!r}.",
                          hint=_HINT) from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ConfigError(f"cutpaste: {name} must be an ordered range [low, high], got {list(value)}.", hint=_HINT)
    if integer and (low != int(low) or high != int(high)):
        raise ConfigError(f"cutpaste: {name} must be whole pixels, got {list(value)}.", hint=_HINT)
    return low, high


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _randint(low: int, high: int) -> int:
    """A random integer in ``[low, high]`` (both included)."""
    return int(torch.randint(int(low), int(high) + 1, ()))


class CutPasteSynthesizer(Synthesizer):
    """Cut a region of the image, optionally colour-jitter it, and paste it at another place.

    ``normal`` cuts a rectangle whose area is a fraction ``area_ratio`` of the image and whose width/height ratio
    lies in ``aspect_ratio`` (a range around 1 picks ``[low, 1]`` or ``[1, high]`` with equal chance, so tall and
    wide patches are equally likely). ``scar`` cuts a thin strip ``scar_width`` x ``scar_length`` pixels and pastes
    it rotated by an angle from ``scar_rotation`` (bilinear resampling). ``union`` picks one of the two per call.

    The mask is the pasted region restricted to the pixels that actually changed, so it is binary and marks exactly
    the changed pixels. A paste that barely changes the image (mean change below ``MIN_CHANGE``) is redrawn, up to
    ``MAX_TRIES`` times; the most visible attempt is kept.

    Args:
        variant: ``normal``, ``scar`` or ``union`` (``binary`` is accepted as OneNIP's name for ``union``).
        area_ratio: normal patch area as a fraction of the image, ``0 < low <= high <= 1``.
        aspect_ratio: normal patch width / height, ``0 < low <= high``.
        scar_width: scar width in pixels, whole numbers ``1 <= low <= high``.
        scar_length: scar length in pixels, whole numbers ``1 <= low <= high``.
        scar_rotation: scar rotation in degrees, within ``[-180, 180]``.
        color_jitter: jitter the patch with torchvision's ``ColorJitter`` before pasting.
        brightness, contrast, saturation: ``ColorJitter`` strengths, ``>= 0`` (0 switches one off).
        hue: ``ColorJitter`` hue strength, in ``[0, 0.5]``.
    """

    modality = "image"
    MIN_CHANGE = 0.02
    MAX_TRIES = 10

    def __init__(self, variant: str = "normal", area_ratio: Sequence[float] = (0.02, 0.15),
                 aspect_ratio: Sequence[float] = (0.3, 3.3), scar_width: Sequence[int] = (2, 16),
                 scar_length: Sequence[int] = (10, 25), scar_rotation: Sequence[float] = (-45.0, 45.0),
                 color_jitter: bool = True, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1) -> None:
        from torchvision.transforms import v2

        variant = _ALIASES.get(str(variant), str(variant))
        if variant not in VARIANTS:
            raise ConfigError(f"cutpaste: unknown variant {variant!r}.", hint=f"Choose one of {', '.join(VARIANTS)}.")
        self.variant = variant
        self.area_ratio = _pair("area_ratio", area_ratio)
        if not 0.0 < self.area_ratio[0] <= self.area_ratio[1] <= 1.0:
            raise ConfigError(f"cutpaste: area_ratio must satisfy 0 < low <= high <= 1, got {list(area_ratio)}.",
                              hint=_HINT)
        self.aspect_ratio = _pair("aspect_ratio", aspect_ratio)
        if self.aspect_ratio[0] <= 0.0:
            raise ConfigError(f"cutpaste: aspect_ratio must be positive, got {list(aspect_ratio)}.", hint=_HINT)
        self.scar_width = _pair("scar_width", scar_width, integer=True)
        self.scar_length = _pair("scar_length", scar_length, integer=True)
        for name, (low, _) in (("scar_width", self.scar_width), ("scar_length", self.scar_length)):
            if low < 1:
                raise ConfigError(f"cutpaste: {name} must be at least 1 pixel, got {low:g}.", hint=_HINT)
        self.scar_rotation = _pair("scar_rotation", scar_rotation)
        if not -180.0 <= self.scar_rotation[0] <= self.scar_rotation[1] <= 180.0:
            raise ConfigError(f"cutpaste: scar_rotation must lie within [-180, 180] degrees, got "
                              f"{list(scar_rotation)}.", hint=_HINT)
        strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
        for name, value in strengths.items():
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= (0.5 if name == "hue" else 1e6):
                bound = "[0, 0.5]" if name == "hue" else ">= 0"
                raise ConfigError(f"cutpaste: {name} must be a number {bound}, got {value!r}.", hint=_HINT)
        self.color_jitter = bool(color_jitter)
        self.jitter = v2.ColorJitter(**{k: float(v) for k, v in strengths.items()}) if self.color_jitter else None

    # ------------------------------------------------------------------------------------------------ sampling
    def _aspect(self) -> float:
        low, high = self.aspect_ratio
        if low < 1.0 < high:  # either side of 1 with equal chance: tall and wide patches equally often
            return _uniform(low, 1.0) if float(torch.rand(())) < 0.5 else _uniform(1.0, high)
        return _uniform(low, high)

    def _colour(self, patch: torch.Tensor) -> torch.Tensor:
        return self.jitter(patch).clamp(0, 1) if self.jitter is not None else patch

    def _paste_normal(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A rectangle from one place, jittered, pasted at another place (integer pixel copy)."""
        _, height, width = image.shape
        area = _uniform(*self.area_ratio) * height * width
        aspect = self._aspect()
        w = min(max(round(math.sqrt(area * aspect)), 1), width - 1)
        h = min(max(round(math.sqrt(area / aspect)), 1), height - 1)
        sy, sx = _randint(0, height - h), _randint(0, width - w)
        dy, dx = _randint(0, height - h), _randint(0, width - w)
        while (dy, dx) == (sy, sx):  # the patch must move (there are at least two places in each direction)
            dy, dx = _randint(0, height - h), _randint(0, width - w)
        out = image.clone()
        out[:, dy:dy + h, dx:dx + w] = self._colour(image[:, sy:sy + h, sx:sx + w].clone())
        region = torch.zeros(height, width, dtype=torch.bool, device=image.device)
        region[dy:dy + h, dx:dx + w] = True
        return out, region

    def _paste_scar(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A thin strip from one place, jittered, rotated and pasted at another place (bilinear resampling)."""
        _, height, width = image.shape
        w = min(_randint(*self.scar_width), width)
        length = min(_randint(*self.scar_length), height)
        sy, sx = _randint(0, height - length), _randint(0, width - w)
        patch = self._colour(image[:, sy:sy + length, sx:sx + w].clone())
        theta = math.radians(_uniform(*self.scar_rotation))
        cos, sin = math.cos(theta), math.sin(theta)
        half_x = (w * abs(cos) + length * abs(sin)) / 2  # half extents of the rotated strip's bounding box
        half_y = (w * abs(sin) + length * abs(cos)) / 2
        cx = _uniform(half_x, width - half_x) if 2 * half_x < width else width / 2
        cy = _uniform(half_y, height - half_y) if 2 * half_y < height else height / 2
        dev = image.device
        ys = torch.arange(height, device=dev, dtype=torch.float32) + 0.5 - cy
        xs = torch.arange(width, device=dev, dtype=torch.float32) + 0.5 - cx
        py, px = torch.meshgrid(ys, xs, indexing="ij")
        u = cos * px + sin * py  # destination pixel centres in the strip's own frame (inverse rotation)
        v = -sin * px + cos * py
        region = (u.abs() < w / 2) & (v.abs() < length / 2)
        grid = torch.stack((2 * u / w, 2 * v / length), dim=-1)[None]  # align_corners=False coordinates
        sampled = F.grid_sample(patch[None].float(), grid, mode="bilinear", padding_mode="border",
                                align_corners=False)[0].to(image.dtype)
        out = torch.where(region[None], sampled, image)
        return out, region

    # ------------------------------------------------------------------------------------------------ interface
    def synthesize(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Paste one patch into ``sample`` ``[3, H, W]``; return ``(image, mask [1, H, W])``."""
        if sample.ndim != 3 or sample.shape[0] != 3 or min(sample.shape[-2:]) < 2:
            raise ConfigError(f"cutpaste expects an image [3, H, W] with H, W >= 2, got shape {tuple(sample.shape)}.")
        image = sample.float()
        variant = self.variant
        if variant == "union":
            variant = "normal" if float(torch.rand(())) < 0.5 else "scar"
        paste = self._paste_normal if variant == "normal" else self._paste_scar
        best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        for _ in range(self.MAX_TRIES):
            out, region = paste(image)
            change = (out - image).abs().amax(0)
            score = float(change[region].mean()) if bool(region.any()) else -1.0
            if best is None or score > best[0]:
                best = (score, out, region)
            if score >= self.MIN_CHANGE:
                break
        assert best is not None
        _, out, region = best
        changed = region & ((out - image).abs().amax(0) > 1e-6)
        out = torch.where(changed[None], out, image).clamp(0, 1)
        return out, changed[None].float()

    def __repr__(self) -> str:
        return (f"CutPasteSynthesizer(variant={self.variant!r}, area_ratio={list(self.area_ratio)}, "
                f"aspect_ratio={list(self.aspect_ratio)}, scar_width={list(self.scar_width)}, "
                f"scar_length={list(self.scar_length)}, scar_rotation={list(self.scar_rotation)}, "
                f"color_jitter={self.color_jitter})")
