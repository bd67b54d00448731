"""Procedural textures and DRAEM-like texture augmentation, drawn from torch's global RNG (seed it to reproduce).

Every function returns a float image ``[3, H, W]`` in ``[0, 1]`` on the CPU. The families stand in for the
Describable Textures Dataset (DTD) when it is not available:

* ``noise``: multi-octave Perlin noise through a 2-3 colour ramp, soft or contrasty (stains, marbling, clouds);
* ``stripes``: rotated stripes of random period and sharpness, warped by Perlin noise (grain, fibres, waves);
* ``checker``: a rotated checkerboard of random cell size, or a grid of lines (woven, grid, chequered);
* ``cells``: Voronoi cells with dark borders, or round spots of random radius (cracked, honeycomb, dotted).

All get random colours and a little per-pixel grain.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["FAMILIES", "augment_texture", "perlin_noise", "procedural_texture"]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _randint(low: int, high: int) -> int:
    """A random integer in ``[low, high]`` (both included)."""
    return int(torch.randint(low, high + 1, ()))


def _colour() -> torch.Tensor:
    """A random RGB colour: a grey level pulled towards a random hue by a random saturation (greys and browns as
    well as vivid colours, as in photographed textures)."""
    grey = torch.full((3,), float(torch.rand(())))
    return torch.lerp(grey, torch.rand(3), float(torch.rand(())) ** 0.7)


def _palette(n: int) -> torch.Tensor:
    """``n`` random RGB colours ``[n, 3]``, each clearly different from the one before."""
    colours = [_colour()]
    while len(colours) < n:
        candidate = _colour()
        for _ in range(5):
            if float((candidate - colours[-1]).abs().max()) >= 0.35:
                break
            candidate = _colour()
        colours.append(candidate)
    return torch.stack(colours)


def _ramp(t: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Map ``t`` ``[H, W]`` in ``[0, 1]`` through a piecewise-linear colour ramp; return ``[3, H, W]``."""
    n = colours.shape[0]
    pos = t.clamp(0, 1) * (n - 1)
    index = pos.floor().clamp(max=n - 2).long()
    frac = (pos - index)[None]
    return colours[index].permute(2, 0, 1) * (1 - frac) + colours[index + 1].permute(2, 0, 1) * frac


def _normalise(t: torch.Tensor) -> torch.Tensor:
    span = t.max() - t.min()
    return (t - t.min()) / span if float(span) > 0 else torch.zeros_like(t)


def perlin_noise(height: int, width: int, cells: tuple[float, float], angle: float = 0.0) -> torch.Tensor:
    """Perlin gradient noise ``[H, W]``, roughly in ``[-1, 1]``, evaluated directly on rotated pixel coordinates.

    ``cells = (cells_y, cells_x)`` is the number of grid cells across the image's longer side along each axis of the
    noise, which is rotated by ``angle`` degrees about the image centre. Random unit gradients at the lattice points,
    quintic fade and the ``sqrt(2)`` scaling follow DRAEM's (and anomalib's) generator; sampling rotated coordinates
    instead of rotating an image keeps the cost at one evaluation per pixel and leaves no empty corners.
    """
    side = float(max(height, width))
    theta = math.radians(angle)
    y = torch.arange(height, dtype=torch.float32)[:, None] + 0.5 - height / 2
    x = torch.arange(width, dtype=torch.float32)[None, :] + 0.5 - width / 2
    gy = (-math.sin(theta) * x + math.cos(theta) * y) * (cells[0] / side)  # lattice coordinates
    gx = (math.cos(theta) * x + math.sin(theta) * y) * (cells[1] / side)
    gy, gx = gy - math.floor(float(gy.min())), gx - math.floor(float(gx.min()))
    iy, ix = gy.floor().long(), gx.floor().long()
    fy, fx = gy - iy, gx - ix
    angles = 2 * math.pi * torch.rand(int(iy.max()) + 2, int(ix.max()) + 2)
    grad_y, grad_x = torch.sin(angles), torch.cos(angles)

    def corner(dy: int, dx: int) -> torch.Tensor:
        return grad_y[iy + dy, ix + dx] * (fy - dy) + grad_x[iy + dy, ix + dx] * (fx - dx)

    ty = fy * fy * fy * (fy * (fy * 6 - 15) + 10)
    tx = fx * fx * fx * (fx * (fx * 6 - 15) + 10)
    top = torch.lerp(corner(0, 0), corner(0, 1), tx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), tx)
    return math.sqrt(2.0) * torch.lerp(top, bottom, ty)


def _fractal(height: int, width: int, base_exponent: int, octaves: int) -> torch.Tensor:
    """Sum of Perlin octaves (each twice as fine, half as strong, randomly oriented), normalised to ``[0, 1]``."""
    total = torch.zeros(height, width)
    angle = _uniform(0.0, 360.0)
    for octave in range(octaves):
        cells = float(2 ** (base_exponent + octave))
        total += 0.5**octave * perlin_noise(height, width, (cells, cells), angle)
    return _normalise(total)


def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, dtype=torch.float32)
    xs = torch.arange(width, dtype=torch.float32)
    return torch.meshgrid(ys, xs, indexing="ij")


def _rotated(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates in a frame rotated by a random angle."""
    y, x = _grid(height, width)
    phi = _uniform(0.0, math.pi)
    return x * math.cos(phi) + y * math.sin(phi), -x * math.sin(phi) + y * math.cos(phi)


def _noise(height: int, width: int) -> torch.Tensor:
    t = _fractal(height, width, _randint(1, 3), 4)
    sharpness = _uniform(1.0, 12.0)
    t = _normalise(torch.sigmoid((t - _uniform(0.35, 0.65)) * sharpness))
    return _ramp(t, _palette(_randint(2, 3)))


def _stripes(height: int, width: int) -> torch.Tensor:
    u, _ = _rotated(height, width)
    period = _uniform(0.03, 0.15) * max(height, width)
    warp = _fractal(height, width, _randint(0, 2), 2) * _uniform(0.0, 3.0)
    wave = torch.sin(2 * math.pi * (u / period + warp))
    hardness = _uniform(0.5, 6.0)
    t = 0.5 + 0.5 * torch.tanh(hardness * wave) / math.tanh(hardness)
    return _ramp(t, _palette(2))


def _checker(height: int, width: int) -> torch.Tensor:
    u, v = _rotated(height, width)
    cell = _uniform(0.04, 0.2) * max(height, width)
    if float(torch.rand(())) < 0.5:  # checkerboard
        t = ((torch.floor(u / cell) + torch.floor(v / cell)) % 2).float()
    else:  # grid of lines
        line = _uniform(0.1, 0.35) * cell
        t = (((u % cell) < line) | ((v % cell) < line)).float()
    return _ramp(t, _palette(2))


def _cells(height: int, width: int) -> torch.Tensor:
    count = _randint(6, 40)
    points = torch.rand(count, 2) * torch.tensor([height, width], dtype=torch.float32)
    y, x = _grid(height, width)
    dist = ((y[None] - points[:, 0, None, None]) ** 2 + (x[None] - points[:, 1, None, None]) ** 2).sqrt()
    nearest, index = dist.topk(2, dim=0, largest=False)
    colours = _palette(3)
    if float(torch.rand(())) < 0.5:  # Voronoi cells with dark borders, a shade per cell
        shade = 0.6 + 0.4 * torch.rand(count)
        cell_colour = colours[torch.randint(0, 2, (count,))] * shade[:, None]
        image = cell_colour[index[0]].permute(2, 0, 1)
        border = _uniform(1.0, 4.0)
        edge = ((nearest[1] - nearest[0]) / border).clamp(0, 1)[None]
        return image * edge + colours[2, :, None, None] * (1 - edge)
    spacing = math.sqrt(height * width / count)  # round spots on a background
    radius = _uniform(0.15, 0.45) * spacing
    softness = _uniform(0.5, 3.0)
    inside = torch.sigmoid((radius - nearest[0]) / softness)[None]
    return colours[0, :, None, None] * inside + colours[1, :, None, None] * (1 - inside)


FAMILIES: dict[str, Callable[[int, int], torch.Tensor]] = {
    "noise": _noise, "stripes": _stripes, "checker": _checker, "cells": _cells}


def procedural_texture(height: int, width: int, families: tuple[str, ...] = tuple(FAMILIES)) -> torch.Tensor:
    """A random texture ``[3, H, W]`` in ``[0, 1]`` from one of ``families`` (chosen uniformly)."""
    family = families[int(torch.randint(len(families), ()))]
    texture = FAMILIES[family](height, width)
    grain = _uniform(0.0, 0.05)
    return (texture + grain * torch.randn(3, height, width)).clamp(0, 1)


# ----------------------------------------------------------------------------------------- augmentation
def _gamma(x: torch.Tensor) -> torch.Tensor:
    gamma = torch.empty(3, 1, 1).uniform_(0.5, 2.0)  # per channel, as DRAEM's GammaContrast
    return x.clamp(0, 1) ** gamma


def _brightness(x: torch.Tensor) -> torch.Tensor:
    return x * _uniform(0.8, 1.2) + _uniform(-30.0, 30.0) / 255.0


def _sharpness(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.adjust_sharpness(x, _uniform(0.0, 2.0))


def _hue_saturation(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.adjust_saturation(TF.adjust_hue(x, _uniform(-50 / 360, 50 / 360)), _uniform(0.5, 1.5))


def _solarize(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.solarize(x, _uniform(32 / 255, 128 / 255))


def _posterize(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.posterize(x, _randint(2, 6))


def _flip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.autocontrast(x)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.equalize(x)


_AUGMENTERS: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
    _gamma, _brightness, _sharpness, _hue_saturation, _solarize, _posterize, _flip, _invert, _autocontrast,
    _equalize)


def augment_texture(texture: torch.Tensor, count: int = 3) -> torch.Tensor:
    """Apply ``count`` distinct random operations from DRAEM's list (gamma, brightness, sharpness, hue and
    saturation, solarize, posterize, flip, invert, autocontrast, equalize) in random order."""
    for index in torch.randperm(len(_AUGMENTERS))[:count].tolist():
        texture = _AUGMENTERS[index](texture.clamp(0, 1))
    return texture.clamp(0, 1)
